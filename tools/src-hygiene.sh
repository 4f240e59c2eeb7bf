#!/bin/sh
# Source hygiene behind docs/promises.md: the library never aborts, asserts, exits or prints,
# and allocates only through the handle's allocator (dfm__alloc/dfm__calloc/dfm__free; the one
# exception is the default allocator in src/core.c, sys_alloc/sys_calloc/sys_free). And no function is
# longer than 80 lines (docs/reliability.md): long ones are split into named steps.
# usage: src-hygiene.sh [SRC_DIR]
dir=${1:-src}
bad=$(grep -nE '\b(abort|assert|exit|_Exit|printf|puts|putchar|perror|malloc|calloc|realloc|aligned_alloc|posix_memalign|strdup)[[:space:]]*\(|\b(stdout|stderr)\b|\bfree[[:space:]]*\(' "$dir"/*/*.c "$dir"/*/*.h |
      grep -vE '^[^:]*core\.c:[0-9]+:static void \*?sys_(c?alloc|free)' |
      grep -vE '(->|\.)free[[:space:]]*\(' |
      grep -vE '^[^:]+:[0-9]+:[[:space:]]*(/?\*|//)')
if [ -n "$bad" ]; then
    echo "$bad"
    echo "src-hygiene: FAILED: the library must not abort/print/exit or allocate outside dfm_allocator"
    exit 1
fi

# Multiversioned functions are static (core/internal.h: clang 14 names an external one's
# dispatcher "name.ifunc", and callers in other files fail to link).
clones=$(grep -nA1 '^DFM_CLONES' "$dir"/*/*.c | grep -E '^[^:]+-[0-9]+-' | grep -vE '^[^:]+-[0-9]+-static ')
if [ -n "$clones" ]; then
    echo "$clones"
    echo "src-hygiene: FAILED: DFM_CLONES on a function that is not static"
    exit 1
fi

# Function length: from the opening "{" in column 0 to the closing "}" in column 0, inclusive.
# The name is the first "identifier(" of the signature lines just above the "{".
MAX_FN_LINES=80
# Allowed by name while its split is under way elsewhere (remove when it is <= 80 lines).
FN_ALLOW=""
long=$(find "$dir" -name '*.c' | sort | xargs awk -v max="$MAX_FN_LINES" -v allow="$FN_ALLOW" -v root="$dir/" '
    FNR == 1 { sig = ""; start = 0 }
    start == 0 && /^\{/ {
        start = FNR
        name = "?"
        if (match(sig, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/)) {
            name = substr(sig, RSTART, RLENGTH - 1)
            sub(/[ \t]+$/, "", name)
        }
        next
    }
    start == 0 {
        if ($0 ~ /^[ \t]*$/ || $0 ~ /^(\}|#|\/| \*)/ || $0 ~ /;[ \t]*$/) sig = ""
        else sig = sig " " $0
        next
    }
    /^\}/ {
        n = FNR - start + 1
        f = FILENAME
        if (index(f, root) == 1) f = substr(f, length(root) + 1)
        if (n > max && (" " allow " ") !~ (" " f ":" name " "))
            printf "%s: %s is %d lines (at most %d: split it into named steps)\n", FILENAME, name, n, max
        start = 0
        sig = ""
    }')
if [ -n "$long" ]; then
    echo "$long"
    echo "src-hygiene: FAILED: functions longer than $MAX_FN_LINES lines"
    exit 1
fi
echo "src-hygiene: ok ($(ls "$dir"/*/*.c | wc -l) sources: no abort/assert/exit/print, no direct malloc/free, functions <= $MAX_FN_LINES lines)"
