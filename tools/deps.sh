#!/bin/sh
# Installs the Debian packages libdfm's build, tests and examples need, when they are missing.
# As root with apt-get: installs them. Otherwise: prints the exact commands and fails.
# A package named pkg:ARCH (multiarch, e.g. check:arm64 for the aarch64 cross build) first needs
# `dpkg --add-architecture ARCH`; that is done (or printed) too.
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
# foreign architectures the missing packages need and dpkg does not know yet
archs=""
for p in $missing; do
    case "$p" in *:*) a=${p##*:} ;; *) continue ;; esac
    [ "$a" = "$(dpkg --print-architecture 2>/dev/null)" ] && continue
    dpkg --print-foreign-architectures 2>/dev/null | grep -qx "$a" && continue
    case " $archs " in *" $a "*) ;; *) archs="$archs $a" ;; esac
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    for a in $archs; do dpkg --add-architecture "$a" || exit 1; done
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null || exit 1
    exit 0
fi
echo "libdfm needs these Debian packages:$missing"
for a in $archs; do echo "first add their architecture: sudo dpkg --add-architecture $a && sudo apt-get update"; done
echo "install them with: sudo apt-get install$missing"
exit 1
