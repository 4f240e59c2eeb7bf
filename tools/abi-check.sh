#!/bin/sh
# ABI check: compares the shared object with the committed baseline (abidiff) and its exported
# symbols with the version script.
# usage: abi-check.sh BASELINE.abi LIB.so "ABIDW FLAGS"
# Fails on any change that is not a pure addition: a removed or changed function or variable, a
# changed public type (size, layout, member types), a changed symbol version. Added functions
# are allowed (the baseline is regenerated with `make abi-dump` when a release adds symbols).
set -u
base=$1; lib=$2; flags=$3
out=_build/abi
mkdir -p "$out"
[ -f "$base" ] || { echo "abi-check: no baseline $base (make abi-dump)"; exit 1; }
command -v abidw >/dev/null || { echo "abi-check: abidw missing (Debian abigail-tools)"; exit 1; }
abidw $flags --out-file "$out/current.abi" "$lib" || { echo "abi-check: abidw failed"; exit 1; }
abidiff --no-added-syms "$base" "$out/current.abi" > "$out/abidiff.txt" 2>&1
rc=$?
# abidiff status bits: 1 error, 2 usage error, 4 ABI change, 8 incompatible change.
if [ $rc -ne 0 ]; then
    cat "$out/abidiff.txt"
    echo "abi-check: FAILED (abidiff status $rc: $( [ $((rc & 8)) -ne 0 ] && echo incompatible change || echo changed function, variable or public type))"
    exit 1
fi
added=$(abidiff "$base" "$out/current.abi" 2>/dev/null | sed -n 's/.*Functions changes summary: [0-9]* Removed, [0-9]* Changed[^,]*, \([0-9]*\) Added.*/\1/p')
# Exported symbols == version script, all dfm_, none dfm__.
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRW]$/ {print $3}' | sed 's/@.*//' | sort -u > "$out/exported"
sed -n 's/^ *\(dfm_[a-z0-9_]*\);/\1/p' lib/dfm.map | sort -u > "$out/map"
if grep -v '^dfm_' "$out/exported" || grep '^dfm__' "$out/exported"; then
    echo "abi-check: FAILED: symbols outside the dfm_ namespace are exported"; exit 1
fi
if ! diff -u "$out/map" "$out/exported"; then
    echo "abi-check: FAILED: exported symbols differ from lib/dfm.map"; exit 1
fi
echo "abi-check: ok ($(wc -l < "$out/exported") exported symbols match lib/dfm.map; no incompatible change against $base; ${added:-0} functions added)"
