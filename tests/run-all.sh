#!/bin/sh
# Runs every Check suite binary given, then the script tests (ABI, headers, C++, Python).
# Prints each suite's Check summary and a final "N passed, N failed" line; exits nonzero on failure.
# DFM_CHECK_JOBS items run at once (default: the online CPUs, at most 4), the slowest started
# first; the scripts that call make themselves (install.sh, python_install.sh) run afterwards,
# one at a time. Results are printed in the order the items are given, whatever order they
# finish in. DFM_CHECK_SKIP lists script tests to leave out (names as tests/NAME.sh); CI uses it
# for the Python scripts in its second, clang-built run.
if [ "$1" = --one ]; then # --one OUTDIR ITEM: run one item, write OUTDIR/<name>.res
    dir=$2; t=$3
    name=$(basename "$t")
    t0=$(date +%s)
    case "$t" in
    *.sh)
        if out=$(sh "$t" 2>&1); then
            printf 'pass 1\n%s: ok (%s s)\n' "$name" "$(( $(date +%s) - t0 ))" > "$dir/$name.res"
        else
            { echo "fail 1"; echo "$name: FAILED"; echo "$out" | tail -20; } > "$dir/$name.res"
        fi
        exit 0 ;;
    esac
    out=$("$t" 2>&1); rc=$?
    dt=$(( $(date +%s) - t0 ))
    n=$(echo "$out" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p')
    pass=0; fail=0
    if [ -n "$n" ]; then
        c=$(echo "$n" | cut -d' ' -f1); f=$(echo "$n" | cut -d' ' -f2); e=$(echo "$n" | cut -d' ' -f3)
        pass=$((c - f - e)); fail=$((f + e))
    fi
    {
        echo "pass $pass"; echo "fail $fail"
        echo "$out" | grep -E '^[0-9]+%: Checks' | sed "s|^|$name: |; s|\$| (${dt} s)|"
        echo "$out" | grep -E ':[EF]:' | head -20
        if [ $rc -ne 0 ] && [ -z "$n" ]; then echo "fail 1"; echo "$t: exited $rc"; echo "$out" | tail -5; fi
    } > "$dir/$name.res"
    exit 0
fi

jobs=${DFM_CHECK_JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
[ "$jobs" -gt 4 ] 2>/dev/null && jobs=4
[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT INT TERM

scripts=""; serial=""
for s in tests/*.sh; do
    case " $DFM_CHECK_SKIP " in *" $(basename "$s" .sh) "*) echo "$(basename "$s"): skipped (DFM_CHECK_SKIP)"; continue ;; esac
    case "$s" in
    tests/run-all.sh) ;;
    tests/install.sh|tests/python_install.sh) serial="$serial $s" ;;
    *) scripts="$scripts $s" ;;
    esac
done
# The longest items first, so that the runners finish together.
slow="test_infer test_discrete test_gm python_pkg.sh test_ctmc test_continuous cxx_wrapper.sh"
ordered=""; rest=""
for s in $slow; do
    for t in "$@" $scripts; do [ "$(basename "$t")" = "$s" ] && ordered="$ordered $t"; done
done
for t in "$@" $scripts; do
    case " $slow " in *" $(basename "$t") "*) ;; *) rest="$rest $t" ;; esac
done
n_items=$(printf '%s\n' $ordered $rest $serial | grep -c .)
echo "running $n_items suites and scripts, $jobs at a time (DFM_CHECK_JOBS); results follow in order"
printf '%s\n' $ordered $rest | xargs -P "$jobs" -I{} sh "$0" --one "$dir" {}
for s in $serial; do sh "$0" --one "$dir" "$s"; done

pass=0; fail=0
for t in "$@" $scripts $serial; do
    r="$dir/$(basename "$t").res"
    if [ ! -f "$r" ]; then echo "$(basename "$t"): did not run"; fail=$((fail + 1)); continue; fi
    grep -v '^pass \|^fail ' "$r"
    p=$(sed -n 's/^pass //p' "$r" | awk '{s += $1} END {print s + 0}')
    f=$(sed -n 's/^fail //p' "$r" | awk '{s += $1} END {print s + 0}')
    pass=$((pass + p)); fail=$((fail + f))
done
echo "checks: $pass passed, $fail failed"
[ $fail -eq 0 ]
