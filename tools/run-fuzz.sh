#!/bin/sh
# Runs libFuzzer harnesses built by mk/reliability.mk.
# usage: run-fuzz.sh SECONDS "LIBFUZZER FLAGS" HARNESS...
# SECONDS > 0: fuzz each harness that long, starting from tests/fuzz/corpus/<h>/ (read only) and
# _build/fuzz/corpus/<h>/ (where new inputs go). SECONDS = 0: run each committed seed once.
# FUZZ_JOBS (default 2) harnesses run at once (each fuzzer is single-threaded).
# Prints executions per harness and the total; fails when a harness finds a crash, leak, UB
# report or timeout (the reproducer is kept under _build/fuzz/artifacts/).
if [ "$1" = --one ]; then
    secs=$2; flags=$3; h=$4
    bin=_build/fuzz/bin/fuzz_$h
    seeds=tests/fuzz/corpus/$h
    work=_build/fuzz/corpus/$h
    mkdir -p "$work" "$seeds"
    log=_build/fuzz/logs/$h.log
    res=_build/fuzz/logs/$h.result
    start=$(date +%s)
    if [ "$secs" -gt 0 ]; then
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        "$bin" $flags -max_total_time="$secs" -artifact_prefix=_build/fuzz/artifacts/$h- \
            "$work" "$seeds" > "$log" 2>&1
    else
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        "$bin" $flags -runs=0 -artifact_prefix=_build/fuzz/artifacts/$h- "$seeds" > "$log" 2>&1
    fi
    rc=$?
    el=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    seedn=$(ls "$seeds" | wc -l)
    execs=${execs:-0}
    if [ $rc -ne 0 ] || grep -qE 'ERROR: |runtime error:|SUMMARY: ' "$log"; then
        { echo "fuzz: $h FAILED (exit $rc, ${el}s, $execs execs); log: $log"
          grep -E 'ERROR|runtime error|invariant|SUMMARY|Test unit written|#[0-9]+ 0x' "$log" | head -30
          echo "execs $execs"; } > "$res"
        exit 1
    fi
    { echo "fuzz: $h ok: $execs execs in ${el}s, $cov, $seedn seeds"; echo "execs $execs"; } > "$res"
    exit 0
fi
secs=$1; flags=$2; shift 2
mkdir -p _build/fuzz/logs _build/fuzz/artifacts
for h in "$@"; do rm -f "_build/fuzz/logs/$h.result"; done
start=$(date +%s)
printf '%s\n' "$@" | xargs -P "${FUZZ_JOBS:-2}" -I{} sh "$0" --one "$secs" "$flags" {}
fail=0; total=0
for h in "$@"; do
    r=_build/fuzz/logs/$h.result
    if [ -f "$r" ]; then
        grep -v '^execs ' "$r"
        e=$(sed -n 's/^execs //p' "$r")
        total=$((total + ${e:-0}))
        grep -q FAILED "$r" && fail=$((fail + 1))
    else
        echo "fuzz: $h did not run"; fail=$((fail + 1))
    fi
done
echo "fuzz: $# harnesses, $total executions, $fail failed, $(( $(date +%s) - start ))s wall"
[ $fail -eq 0 ]
