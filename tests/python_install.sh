#!/bin/sh
# The Python package installs as a user installs it and finds its library from anywhere:
#  0. the README's `PYTHONPATH=python ... -c "import dfm"` line works as written;
#  1. `pip install ./python` into a fresh venv, from a copy of the tree after `make` (python/ and
#     lib/libdfm.so.0): the package bundles the library; with the copy deleted, `import dfm`
#     from another directory loads the bundled libdfm and samples;
#  2. `make install-python PREFIX=... PYTHON=venv/bin/python`: the package records the installed
#     libdir and loads that library; with DESTDIR, everything lands under it;
#  3. a package built with DFM_BUNDLE=no finds an installed libdfm through pkg-config;
#  4. a libdfm of another major.minor, or no libdfm at all, fails `import dfm` with a message
#     naming the versions / the places searched.
# Needs $PYTHON with venv, pip, setuptools, wheel and numpy (Debian: python3-venv python3-pip
# python3-setuptools python3-wheel python3-numpy); PyPI is never asked.
set -eu
PYTHON=${PYTHON:-python3}
CC=${CC:-cc}
root=$(cd "$(dirname "$0")/.." && pwd)
lib=${DFM_LIBRARY:-${DFM_LIBDIR:-$root/lib}/libdfm.so.0}
[ -e "$lib" ] || { echo "python install: $lib is not built"; exit 1; }
missing=
for m in venv pip setuptools wheel numpy; do
    "$PYTHON" -c "import $m" >/dev/null 2>&1 || missing="$missing $m"
done
if [ -n "$missing" ]; then
    echo "python install: $PYTHON lacks$missing (apt-get install python3-venv python3-pip" \
         "python3-setuptools python3-wheel python3-numpy)"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset PYTHONPATH DFM_LIBRARY DFM_LIBDIR
PIP="--no-index --no-build-isolation --no-cache-dir --quiet --disable-pip-version-check"
fail() { echo "python install: $*"; exit 1; }

# A small end-to-end check run by the installed package, outside any source tree.
cat > "$tmp/use.py" <<'PY'
import sys
import numpy as np
import dfm
want_origin, want_path = sys.argv[1], sys.argv[2]
assert "/site-packages/" in dfm.__file__ or "/dist-packages/" in dfm.__file__, dfm.__file__
assert dfm.library_origin == want_origin, (dfm.library_origin, dfm.library_path)
assert want_path in ("-", dfm.library_path), (dfm.library_path, want_path)
assert dfm.version().split(".")[:2] == dfm.__version__.split(".")[:2]
space = dfm.Space.discrete(3, 2)
gen = dfm.Generator.factorized(dfm.Path.mixture(space, dfm.Scheduler.condot(), "mask"))
def model(t, tokens, reals, out):                    # uniform posterior over 0 and 1
    out[...] = 0.0
    out.reshape(len(t), 2, 3)[:, :, 2] = -50.0
x = dfm.Sampler(gen, "exact", steps=8, seed=1).run(model, rows=5).tokens
assert x.shape == (5, 2) and x.max() < 2, x          # the mask token (2) is gone at t = 1
print(dfm.library_origin, dfm.library_path)
PY

# 0. the README's one-liner, as written, from the top of the tree
line=$(grep -o 'PYTHONPATH=python [^`]*import dfm"' "$root/README.md" | head -n 1)
[ -n "$line" ] || fail "README.md has no PYTHONPATH=python ... import dfm one-liner"
(cd "$root" && sh -c "$line") >"$tmp/readme.log" 2>&1 || { cat "$tmp/readme.log"; fail "README one-liner: $line"; }

# 1. pip install ./python from the tree after `make` (a copy: the test writes nothing in the tree)
mkdir -p "$tmp/src/lib"
cp -R "$root/python" "$tmp/src/python"
rm -rf "$tmp/src/python/build" "$tmp/src/python/dist" "$tmp/src/python"/*.egg-info
cp -L "$lib" "$tmp/src/lib/libdfm.so.0"
"$PYTHON" -m venv --system-site-packages "$tmp/v1"
"$tmp/v1/bin/pip" install $PIP "$tmp/src/python" >"$tmp/pip1.log" 2>&1 ||
    { cat "$tmp/pip1.log"; fail "pip install ./python failed"; }
rm -rf "$tmp/src"
(cd "$tmp" && "$tmp/v1/bin/python" use.py bundled -) >/dev/null || fail "bundled library"

# 2. make install-python into a prefix, then into a DESTDIR
# (the other venvs use the system pip through --system-site-packages: a venv with its own pip
# takes 10 s to create)
"$PYTHON" -m venv --without-pip --system-site-packages "$tmp/v2"
make --no-print-directory -C "$root" install-python PREFIX="$tmp/prefix" \
    PYTHON="$tmp/v2/bin/python" >"$tmp/make2.log" 2>&1 ||
    { tail -20 "$tmp/make2.log"; fail "make install-python failed"; }
(cd "$tmp" && "$tmp/v2/bin/python" use.py install-python "$tmp/prefix/lib/libdfm.so.0") \
    >/dev/null || fail "make install-python: recorded libdir"
make --no-print-directory -C "$root" install-python DESTDIR="$tmp/root" PREFIX=/opt/dfm \
    PYTHON="$tmp/v2/bin/python" >"$tmp/make3.log" 2>&1 ||
    { tail -20 "$tmp/make3.log"; fail "make install-python DESTDIR failed"; }
rec=$(find "$tmp/root" -path '*/dfm/_install.py' | head -n 1)
[ -n "$rec" ] && grep -q "LIBDIR = '/opt/dfm/lib'" "$rec" || fail "DESTDIR install lacks the recorded libdir"
[ -e "$tmp/root/opt/dfm/lib/libdfm.so.0" ] || fail "DESTDIR install lacks the library"

# 3. no bundled library: pkg-config finds the installed one
"$PYTHON" -m venv --without-pip --system-site-packages "$tmp/v3"
cp -R "$root/python" "$tmp/py3"
rm -rf "$tmp/py3/build" "$tmp/py3/dist" "$tmp/py3"/*.egg-info
DFM_BUNDLE=no "$tmp/v3/bin/python" -m pip install $PIP "$tmp/py3" >"$tmp/pip3.log" 2>&1 ||
    { cat "$tmp/pip3.log"; fail "pip install (DFM_BUNDLE=no) failed"; }
(cd "$tmp" && PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" "$tmp/v3/bin/python" use.py \
    pkg-config "$tmp/prefix/lib/libdfm.so.0") >/dev/null || fail "pkg-config search"

# 4. a libdfm of another version, and none at all
printf 'unsigned dfm_version_number(void) { return 10203; }\n' > "$tmp/fake.c"
$CC -shared -fPIC -o "$tmp/libfake.so" "$tmp/fake.c"
if (cd "$tmp" && DFM_LIBRARY="$tmp/libfake.so" "$tmp/v3/bin/python" -c "import dfm") \
        >"$tmp/err4" 2>&1; then fail "a libdfm 1.2.3 was accepted"; fi
grep -q "ImportError: libdfm 1.2.3 at $tmp/libfake.so does not match this dfm package, written for libdfm 0.2" "$tmp/err4" ||
    { cat "$tmp/err4"; fail "version mismatch message"; }
if (cd "$tmp" && PKG_CONFIG_LIBDIR="$tmp/none" LD_LIBRARY_PATH= "$tmp/v3/bin/python" -c "import dfm") \
        >"$tmp/err5" 2>&1; then
    ldconfig -p 2>/dev/null | grep -q libdfm.so.0 || fail "import without any libdfm succeeded"
elif ! grep -q "ImportError: libdfm shared library not found" "$tmp/err5"; then
    cat "$tmp/err5"; fail "library-not-found message"
fi
echo "python install: README one-liner, pip install ./python (bundled), make install-python (prefix, DESTDIR), pkg-config search, version check ok"
