#!/bin/sh
# Runs every Check suite binary given, then the script tests (ABI, headers, C++, Python).
# Prints each suite's Check summary and a final "N passed, N failed" line; exits nonzero on failure.
pass=0; fail=0
for t in "$@"; do
    t0=$(date +%s)
    out=$("$t" 2>&1); rc=$?
    dt=$(( $(date +%s) - t0 ))
    echo "$out" | grep -E '^[0-9]+%: Checks' | sed "s|^|$(basename "$t"): |; s|\$| (${dt} s)|"
    echo "$out" | grep -E ':[EF]:' | head -20
    n=$(echo "$out" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p')
    if [ -n "$n" ]; then
        c=$(echo "$n" | cut -d' ' -f1); f=$(echo "$n" | cut -d' ' -f2); e=$(echo "$n" | cut -d' ' -f3)
        pass=$((pass + c - f - e)); fail=$((fail + f + e))
    fi
    if [ $rc -ne 0 ] && [ -z "$n" ]; then echo "$t: exited $rc"; echo "$out" | tail -5; fail=$((fail + 1)); fi
done
for s in tests/*.sh; do
    [ "$s" = tests/run-all.sh ] && continue
    t0=$(date +%s)
    if out=$(sh "$s" 2>&1); then echo "$(basename "$s"): ok ($(( $(date +%s) - t0 )) s)"; pass=$((pass + 1))
    else echo "$(basename "$s"): FAILED"; echo "$out" | tail -20; fail=$((fail + 1)); fi
done
echo "checks: $pass passed, $fail failed"
[ $fail -eq 0 ]
