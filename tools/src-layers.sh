#!/bin/sh
# The layering rules of src/ (docs/architecture.md), checked:
#   1. includes only point down: core (0) < handles (1) < discrete, continuous, ctmc (2) < gm (3);
#   2. modules of one layer never include each other;
#   3. a higher module reaches a lower module only through its named internal header
#      (<module>/<module>_impl.h), never through its other private headers;
#   4. no include loops between files;
#   5. with OBJ_DIR (the built objects, one per source): no loops between source files in who
#      calls whom (nm: a file that uses a symbol another defines depends on it).
# usage: src-layers.sh [SRC_DIR [OBJ_DIR]]
src=${1:-src}
obj=${2:-}
fail=0
tmp=${TMPDIR:-/tmp}/src-layers.$$
trap 'rm -f "$tmp".*' EXIT INT TERM

layer() {
    case "$1" in
        core) echo 0 ;; handles) echo 1 ;; discrete|continuous|ctmc) echo 2 ;; gm) echo 3 ;;
        *) echo -1 ;;
    esac
}

: > "$tmp.inc"
for f in "$src"/*/*.c "$src"/*/*.h; do
    rel=${f#"$src"/}
    dir=${rel%%/*}
    lf=$(layer "$dir")
    if [ "$lf" -lt 0 ]; then echo "src-layers: $rel: folder '$dir' is not a known layer"; fail=1; continue; fi
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
        case "$inc" in dfm/*) continue ;; esac
        g=${inc%%/*}
        if [ "$g" = "$inc" ] || [ ! -f "$src/$inc" ]; then
            echo "src-layers: $rel includes \"$inc\": name the folder (\"core/internal.h\") of a file in $src/"
            fail=1; continue
        fi
        echo "$rel $inc" >> "$tmp.inc"
        [ "$g" = "$dir" ] && continue
        lg=$(layer "$g")
        if [ "$lg" -gt "$lf" ]; then
            echo "src-layers: $rel (layer $lf, $dir) includes \"$inc\" of the higher layer $lg ($g)"; fail=1
        elif [ "$lg" -eq "$lf" ]; then
            echo "src-layers: $rel includes \"$inc\": modules of one layer ($dir, $g) never include each other"; fail=1
        elif [ "$lg" -ge 2 ] && [ "$inc" != "$g/${g}_impl.h" ]; then
            echo "src-layers: $rel includes \"$inc\": another module is reached through $g/${g}_impl.h only"; fail=1
        fi
    done
done

# tsort reports any cycle of the "includer included" pairs on stderr.
if ! tsort "$tmp.inc" > /dev/null 2> "$tmp.err"; then
    echo "src-layers: include loop:"; sed 's/^/  /' "$tmp.err"; fail=1
fi

nobj=0
if [ -n "$obj" ]; then
    : > "$tmp.def"; : > "$tmp.use"
    for o in "$obj"/*/*.o; do
        [ -f "$o" ] || continue
        rel=${o#"$obj"/}
        [ -f "$src/${rel%.o}.c" ] || continue # left over from a source that was moved away
        nobj=$((nobj + 1))
        nm --defined-only "$o" | awk -v f="$rel" '$2 ~ /^[TDBRVW]$/ { print $3, f }' >> "$tmp.def"
        nm --undefined-only "$o" | awk -v f="$rel" '{ print $NF, f }' >> "$tmp.use"
    done
    if [ "$nobj" -eq 0 ]; then echo "src-layers: no objects of $src/ in $obj (build first)"; fail=1; fi
    # pairs "user definer" for every symbol one object defines and another uses
    awk 'NR == FNR { def[$1] = $2; next } ($1 in def) && def[$1] != $2 { print $2, def[$1] }' \
        "$tmp.def" "$tmp.use" | sort -u > "$tmp.dep"
    if ! tsort "$tmp.dep" > /dev/null 2> "$tmp.err"; then
        echo "src-layers: source files that call each other in a loop (move the shared part into a third file):"
        sed 's/^/  /' "$tmp.err"
        # name the pairs on the loop: both directions present
        awk '{ e[$1 " " $2] = 1 } END { for (k in e) { split(k, p, " "); if ((p[2] " " p[1]) in e && p[1] < p[2]) print "  " p[1] " <-> " p[2] } }' "$tmp.dep"
        fail=1
    fi
fi

if [ "$fail" -ne 0 ]; then echo "src-layers: FAILED (rules: docs/architecture.md)"; exit 1; fi
n=$(wc -l < "$tmp.inc")
if [ -n "$obj" ]; then
    echo "src-layers: ok ($n includes point down, no include loops; $nobj objects, no call loops)"
else
    echo "src-layers: ok ($n includes point down, no include loops)"
fi
