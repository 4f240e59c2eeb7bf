#!/bin/sh
# Runs Check suite binaries under a sanitizer or a wrapper (valgrind) and fails on any report.
# usage: run-suites.sh LABEL "WRAPPER" BIN...   (WRAPPER may be empty)
# A suite fails when it exits nonzero, when Check reports a failure, or when its output holds a
# sanitizer or memcheck report. Full logs: _build/LABEL/logs/<suite>.log.
label=$1; wrapper=$2; shift 2
logs=_build/$label/logs
mkdir -p "$logs"
fail=0; total_start=$(date +%s)
for t in "$@"; do
    name=$(basename "$t")
    start=$(date +%s)
    $wrapper "$t" > "$logs/$name.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    summary=$(grep -E '^[0-9]+%: Checks' "$logs/$name.log" | head -1)
    bad=""
    [ $rc -ne 0 ] && bad="exit $rc"
    if grep -qE 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|WARNING: ThreadSanitizer|runtime error:|SUMMARY: (Address|Leak|Thread|UndefinedBehavior)Sanitizer|ERROR SUMMARY: [1-9]|definitely lost: [1-9]|indirectly lost: [1-9]|possibly lost: [1-9]' "$logs/$name.log"; then
        bad="$bad report"
    fi
    case "$summary" in 100%:*) ;; *) bad="$bad checks";; esac
    if [ -n "$bad" ]; then
        echo "$label: $name FAILED ($bad, ${secs}s): $summary"
        grep -E ':[EF]:|ERROR|WARNING|runtime error|SUMMARY|lost:|#[0-9] ' "$logs/$name.log" | head -40
        fail=$((fail + 1))
    else
        echo "$label: $name ok (${secs}s): $summary"
    fi
done
echo "$label: $# suites, $fail failed, $(( $(date +%s) - total_start ))s"
[ $fail -eq 0 ]
