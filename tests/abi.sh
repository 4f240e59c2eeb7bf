#!/bin/sh
# ABI and public-surface checks, run by `make check` (tests/run-all.sh):
#  1. the shared object exports exactly the symbols of lib/dfm.map, all dfm_-prefixed;
#  2. the map lists exactly the functions the public headers declare with DFM_API;
#  3. SONAME is libdfm.so.0;
#  4. the public headers compile as C99 -pedantic -Werror and as C++11 -Werror;
#  5. a C++ program links against the library and calls it;
#  6. no two DFM_OPT_* options share an id.
set -eu
CC=${CC:-cc}
CXX=${CXX:-c++}
L=$(cd "${DFM_LIBDIR:-lib}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nm -D --defined-only "$L"/libdfm.so | awk '$2 ~ /^[TDBRW]$/ {print $3}' | sed 's/@.*//' | sort -u > "$tmp/exported"
sed -n 's/^ *\(dfm_[a-z0-9_]*\);/\1/p' lib/dfm.map | sort -u > "$tmp/map"
sh tools/api-names.sh include/dfm > "$tmp/headers"
if grep -v '^dfm_' "$tmp/exported"; then echo "non-dfm_ symbols exported"; exit 1; fi
if grep '^dfm__' "$tmp/exported"; then echo "internal dfm__ symbols exported"; exit 1; fi
diff -u "$tmp/map" "$tmp/exported" || { echo "exported symbols differ from lib/dfm.map"; exit 1; }
diff -u "$tmp/map" "$tmp/headers" || { echo "lib/dfm.map differs from the DFM_API declarations"; exit 1; }

# option ids are frozen and shared by every handle's setters: no two options may share one
dup=$(grep -h '^#define DFM_OPT_[A-Z0-9_]* *[0-9]' include/dfm/*.h | awk '{print $3}' | sort | uniq -d)
[ -z "$dup" ] || { echo "option ids used twice: $dup"; exit 1; }

soname=$(objdump -p "$L"/libdfm.so | awk '/SONAME/ {print $2}')
[ "$soname" = libdfm.so.0 ] || { echo "SONAME is $soname"; exit 1; }

for h in include/dfm/*.h; do
    printf '#include "dfm/%s"\nint main(void) { return 0; }\n' "$(basename "$h")" > "$tmp/h.c"
    $CC -std=c99 -pedantic -Wall -Wextra -Werror -Iinclude -c "$tmp/h.c" -o "$tmp/h.o"
    cp "$tmp/h.c" "$tmp/h.cpp"
    $CXX -std=c++11 -pedantic -Wall -Wextra -Werror -Iinclude -c "$tmp/h.cpp" -o "$tmp/h.o"
done

cat > "$tmp/prog.cpp" <<'CPP'
#include <dfm/dfm.h>
#include <cstdio>
#include <cstring>
#include <memory>
struct space_deleter { void operator()(dfm_space *s) const { dfm_space_free(s); } };
int main()
{
    dfm_space *raw = nullptr;
    if (dfm_space_create_discrete(&raw, 5, 3, nullptr) != DFM_OK) return 1;
    std::unique_ptr<dfm_space, space_deleter> sp(raw);
    if (dfm_space_n_tokens(sp.get()) != 3) return 2;
    if (std::strcmp(dfm_version_string(), DFM_VERSION_STRING) != 0) return 3;
    if (dfm_version_number() != DFM_VERSION_NUMBER) return 4;
    std::printf("%s %s\n", dfm_version_string(), dfm_strerror(DFM_EINVAL));
    return 0;
}
CPP
$CXX -std=c++11 -Wall -Wextra -Werror -Iinclude "$tmp/prog.cpp" -o "$tmp/prog" -L"$L" -ldfm -Wl,-rpath,"$L"
"$tmp/prog" > /dev/null
echo "abi: $(wc -l < "$tmp/map") symbols, SONAME $soname, headers C99/C++11 clean, C++ program ok"
