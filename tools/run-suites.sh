#!/bin/sh
# Runs Check suite binaries under a sanitizer or a wrapper (valgrind) and fails on any report.
# usage: run-suites.sh LABEL "WRAPPER" BIN...   (WRAPPER may be empty)
# REL_JOBS (default 2) suites run at once. A suite fails when it exits nonzero, when Check
# reports a failure, or when its output holds a sanitizer or memcheck report.
# Full logs: _build/LABEL/logs/<suite>.log.
if [ "$1" = --one ]; then
    label=$2; wrapper=$3; t=$4
    logs=_build/$label/logs
    name=$(basename "$t")
    start=$(date +%s)
    $wrapper "$t" > "$logs/$name.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    summary=$(grep -E '^[0-9]+%: Checks' "$logs/$name.log" | head -1)
    bad=""
    [ $rc -ne 0 ] && bad="exit $rc"
    if grep -qE 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|WARNING: ThreadSanitizer|runtime error:|SUMMARY: (Address|Leak|Thread|UndefinedBehavior)Sanitizer|ERROR SUMMARY: [1-9]|definitely lost: [1-9]|indirectly lost: [1-9]|possibly lost: [1-9]|are (definitely|indirectly|possibly) lost|Invalid (read|write|free)|uninitialised' "$logs/$name.log"; then
        bad="$bad report"
    fi
    case "$summary" in 100%:*) ;; *) bad="$bad checks";; esac
    if [ -n "$bad" ]; then
        { echo "$label: $name FAILED ($bad, ${secs}s): $summary"
          grep -E ':[EF]:|ERROR|WARNING|runtime error|SUMMARY|lost|Invalid|uninitialised|#[0-9] |==[0-9]+==    (at|by)' "$logs/$name.log" | head -40
        } > "$logs/$name.result"
        exit 1
    fi
    echo "$label: $name ok (${secs}s): $summary" > "$logs/$name.result"
    exit 0
fi
label=$1; wrapper=$2; shift 2
logs=_build/$label/logs
mkdir -p "$logs"
total_start=$(date +%s)
for t in "$@"; do rm -f "$logs/$(basename "$t").result"; done
printf '%s\n' "$@" | xargs -P "${REL_JOBS:-2}" -I{} sh "$0" --one "$label" "$wrapper" {}
fail=0
for t in "$@"; do
    r="$logs/$(basename "$t").result"
    if [ -f "$r" ]; then cat "$r"; else echo "$label: $(basename "$t") did not run"; fail=$((fail + 1)); fi
    grep -q FAILED "$r" 2>/dev/null && fail=$((fail + 1))
done
echo "$label: $# suites, $fail failed, $(( $(date +%s) - total_start ))s wall"
[ $fail -eq 0 ]
