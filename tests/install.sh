#!/bin/sh
# make install into a staging DESTDIR honours PREFIX/LIBDIR/INCLUDEDIR, and a program links
# against the installed library through pkg-config, shared and static.
set -eu
CC=${CC:-cc}
command -v make >/dev/null || { echo "make missing"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make --no-print-directory install DESTDIR="$tmp/root" PREFIX=/opt/dfm LIBDIR=/opt/dfm/lib64 >/dev/null
r="$tmp/root/opt/dfm"
for f in include/dfm/dfm.h include/dfm/dfm.hpp lib64/libdfm.so lib64/libdfm.so.0 lib64/libdfm.a lib64/pkgconfig/dfm.pc; do
    [ -e "$r/$f" ] || { echo "missing after install: $f"; exit 1; }
done
grep -q '^libdir=/opt/dfm/lib64$' "$r/lib64/pkgconfig/dfm.pc" || { echo "dfm.pc libdir wrong"; cat "$r/lib64/pkgconfig/dfm.pc"; exit 1; }
cat > "$tmp/p.c" <<'C'
#include <dfm/dfm.h>
#include <stdio.h>
int main(void) { printf("%s\n", dfm_version_string()); return dfm_version_number() == DFM_VERSION_NUMBER ? 0 : 1; }
C
export PKG_CONFIG_SYSROOT_DIR="$tmp/root" PKG_CONFIG_PATH="$r/lib64/pkgconfig"
$CC "$tmp/p.c" -o "$tmp/p_shared" $(pkg-config --cflags --libs dfm) -Wl,-rpath,"$r/lib64"
"$tmp/p_shared" > /dev/null
$CC "$tmp/p.c" -o "$tmp/p_static" $(pkg-config --cflags dfm) "$r/lib64/libdfm.a" $(pkg-config --static --libs-only-other --libs-only-l dfm | sed 's/-ldfm//')
"$tmp/p_static" > /dev/null
echo "install: staged install, pkg-config shared and static links ok"
