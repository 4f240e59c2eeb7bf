#!/bin/sh
# The Python package (python/dfm) and its unittest suite, run with $PYTHON against the freshly
# built lib/libdfm.so.0 (DFM_LIBRARY, or DFM_LIBDIR as meson sets it, overrides). Prints a
# one-line summary; nonzero on failure.
PYTHON=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
lib=${DFM_LIBRARY:-${DFM_LIBDIR:-$root/lib}/libdfm.so.0}
if [ ! -e "$lib" ]; then echo "python package: $lib is not built"; exit 1; fi
if ! "$PYTHON" -c "import numpy" >/dev/null 2>&1; then
    echo "python package: $PYTHON cannot import numpy (install python3-numpy)"; exit 1
fi
cd "$root" && DFM_LIBRARY="$lib" PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -W error::ResourceWarning python/tests/run.py
