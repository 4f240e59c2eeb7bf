#!/bin/sh
# Installs the Debian packages libdfm's build, tests and examples need, when they are missing.
# As root with apt-get: installs them. Otherwise: prints the exact command and fails.
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null || exit 1
    exit 0
fi
echo "libdfm needs these Debian packages:$missing"
echo "install them with: sudo apt-get install$missing"
exit 1
