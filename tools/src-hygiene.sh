#!/bin/sh
# Source hygiene behind docs/promises.md: the library never aborts, asserts, exits or prints,
# and allocates only through the handle's allocator (dfm__alloc/dfm__calloc/dfm__free; the one
# exception is the default allocator in src/core.c, sys_alloc/sys_free).
# usage: src-hygiene.sh [SRC_DIR]
dir=${1:-src}
bad=$(grep -nE '\b(abort|assert|exit|_Exit|printf|puts|putchar|perror|malloc|calloc|realloc|aligned_alloc|posix_memalign|strdup)[[:space:]]*\(|\b(stdout|stderr)\b|\bfree[[:space:]]*\(' "$dir"/*/*.c "$dir"/*/*.h |
      grep -vE '^[^:]*core\.c:[0-9]+:static void \*?sys_(alloc|free)' |
      grep -vE '(->|\.)free[[:space:]]*\(' |
      grep -vE '^[^:]+:[0-9]+:[[:space:]]*(/?\*|//)')
if [ -n "$bad" ]; then
    echo "$bad"
    echo "src-hygiene: FAILED: the library must not abort/print/exit or allocate outside dfm_allocator"
    exit 1
fi
echo "src-hygiene: ok ($(ls "$dir"/*/*.c | wc -l) sources: no abort/assert/exit/print, no direct malloc/free)"
