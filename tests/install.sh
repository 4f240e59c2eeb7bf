#!/bin/sh
# make install into a staging DESTDIR honours PREFIX/LIBDIR/INCLUDEDIR; dfm.pc and dfm-static.pc
# are relocatable (libdir/includedir under ${prefix}) and keep OpenBLAS out of the shared
# consumer's --cflags; a program links against the installed library shared (dfm) and static
# with exactly the recipe of the README and docs/build.md (dfm-static: no libdfm.so NEEDED, and
# it runs with no library path); `make uninstall` removes every file install put there; meson
# writes the same .pc files as the Makefile.
set -eu
CC=${CC:-cc}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
command -v make >/dev/null || { echo "make missing"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "install: $*"; exit 1; }
stage="DESTDIR=$tmp/root PREFIX=/opt/dfm LIBDIR=/opt/dfm/lib64"
make --no-print-directory install $stage >/dev/null
r="$tmp/root/opt/dfm"
for f in include/dfm/dfm.h include/dfm/dfm.hpp lib64/libdfm.so lib64/libdfm.so.0 lib64/libdfm.a \
         lib64/pkgconfig/dfm.pc lib64/pkgconfig/dfm-static.pc; do
    [ -e "$r/$f" ] || fail "missing after install: $f"
done
for pc in dfm dfm-static; do
    grep -q '^prefix=/opt/dfm$' "$r/lib64/pkgconfig/$pc.pc" &&
    grep -q '^libdir=${prefix}/lib64$' "$r/lib64/pkgconfig/$pc.pc" &&
    grep -q '^includedir=${prefix}/include$' "$r/lib64/pkgconfig/$pc.pc" ||
        { cat "$r/lib64/pkgconfig/$pc.pc"; fail "$pc.pc: prefix, libdir or includedir wrong"; }
done

# The staged tree answers for itself: prefix redefined, libdir and includedir follow.
pc() { PKG_CONFIG_PATH="$r/lib64/pkgconfig" $PKG_CONFIG --define-variable=prefix="$r" "$@"; }
[ "$(pc --variable=libdir dfm)" = "$r/lib64" ] || fail "libdir does not follow prefix"
cflags=$(pc --cflags dfm)
[ "$(echo $cflags)" = "-I$r/include" ] || fail "pkg-config --cflags dfm gives '$cflags' (only -I$r/include expected)"
case " $(pc --static --libs dfm) " in *" -ldfm "*" -lopenblas "*|*" -ldfm "*" -lcblas "*|*" -ldfm "*" -lblas "*) ;;
    *) fail "pkg-config --static --libs dfm lacks the CBLAS: $(pc --static --libs dfm)";; esac

cat > "$tmp/p.c" <<'C'
#include <dfm/dfm.h>
#include <stdio.h>
int main(void) { printf("%s\n", dfm_version_string()); return dfm_version_number() == DFM_VERSION_NUMBER ? 0 : 1; }
C
cd "$tmp"
# shared (the README's first line)
$CC p.c $(pc --cflags --libs dfm) -Wl,-rpath,"$r/lib64" -o p_shared
./p_shared > /dev/null || fail "shared program failed"
readelf -d p_shared | grep -q 'NEEDED.*\[libdfm\.so\.0\]' || fail "shared program does not need libdfm.so.0"
# static (the README's second line, word for word apart from the staged pkg-config)
$CC p.c $(pc --cflags --libs dfm-static) -o p_static
if readelf -d p_static | grep NEEDED | grep -q libdfm; then fail "static program needs libdfm.so"; fi
if ldd ./p_static | grep -q libdfm; then fail "ldd shows libdfm in the static program"; fi
env -u LD_LIBRARY_PATH ./p_static > /dev/null || fail "static program failed"
cd - >/dev/null

# uninstall removes what install put there (directories may stay)
make --no-print-directory uninstall $stage >/dev/null
left=$(find "$tmp/root" ! -type d)
[ -z "$left" ] || fail "left after make uninstall: $left"

# meson's .pc files are the Makefile's (same prefix, libdir and CBLAS)
if command -v meson >/dev/null 2>&1; then
    meson setup "$tmp/m" --prefix=/opt/dfm --libdir=lib64 >/dev/null 2>&1 || fail "meson setup failed"
    make --no-print-directory install $stage >/dev/null
    for pc in dfm dfm-static; do
        diff -u "$r/lib64/pkgconfig/$pc.pc" "$tmp/m/$pc.pc" || fail "meson's $pc.pc differs from the Makefile's"
    done
    pcs="dfm.pc and dfm-static.pc as meson's"
else
    pcs="(meson missing: .pc comparison skipped)"
fi
echo "install: staged install, relocatable $pcs, shared and static (no libdfm.so NEEDED) links ok, uninstall clean"
