#!/bin/sh
# The documentation is complete and self-contained:
#  1. every exported function (lib/dfm.map) is documented in docs/ (named in backquotes or code);
#  2. every relative link of README.md and docs/ points to a file of the repository;
#  3. no page cites a document that is not in the repository (DESIGN.md, STYLE.md).
set -eu
missing=0
for f in $(sed -n 's/^ *\(dfm_[a-z0-9_]*\);/\1/p' lib/dfm.map); do
    if ! grep -rqw "$f" docs/; then echo "undocumented: $f"; missing=$((missing + 1)); fi
done
[ $missing -eq 0 ] || { echo "$missing exported functions lack documentation in docs/"; exit 1; }
broken=0
for page in README.md $(find docs -name '*.md'); do
    dir=$(dirname "$page")
    for link in $(grep -o '](\([^)#: ]*\)\(#[^)]*\)\?)' "$page" | sed 's/^](\([^)#]*\).*/\1/' | sort -u); do
        [ -n "$link" ] || continue
        [ -e "$dir/$link" ] || { echo "$page: broken link $link"; broken=$((broken + 1)); }
    done
done
[ $broken -eq 0 ] || { echo "$broken broken links in the documentation"; exit 1; }
if grep -rnw -e 'DESIGN\.md' -e 'STYLE\.md' README.md docs; then
    echo "the documentation cites files that are not in the repository"; exit 1
fi
echo "docs: every exported function is documented, every link resolves, no outside citations"
