#!/bin/sh
# Every exported function (lib/dfm.map) is documented in docs/ (named in backquotes or code).
set -eu
missing=0
for f in $(sed -n 's/^ *\(dfm_[a-z0-9_]*\);/\1/p' lib/dfm.map); do
    if ! grep -rqw "$f" docs/; then echo "undocumented: $f"; missing=$((missing + 1)); fi
done
[ $missing -eq 0 ] || { echo "$missing exported functions lack documentation in docs/"; exit 1; }
echo "docs: every exported function is documented"
