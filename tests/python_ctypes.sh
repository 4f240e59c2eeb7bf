#!/bin/sh
# A Python ctypes script loads the shared library and calls it (as an FFI user would).
set -eu
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || { echo "python3 not found"; exit 1; }
"$PYTHON" - <<'PY'
import ctypes, os, re
lib = ctypes.CDLL(os.path.join(os.path.abspath(os.environ.get("DFM_LIBDIR", "lib")), "libdfm.so.0"))
lib.dfm_version_string.restype = ctypes.c_char_p
lib.dfm_strerror.restype = ctypes.c_char_p
lib.dfm_strerror.argtypes = [ctypes.c_int]
lib.dfm_version_number.restype = ctypes.c_uint
hdr = open("include/dfm/common.h").read()
want = re.search(r'#define DFM_VERSION_STRING "([^"]+)"', hdr).group(1)
got = lib.dfm_version_string().decode()
assert got == want, (got, want)
maj, mnr, pat = (int(x) for x in want.split("."))
assert lib.dfm_version_number() == maj * 10000 + mnr * 100 + pat
n = lib.dfm_status_count()
msgs = [lib.dfm_strerror(i).decode() for i in range(n)]
assert len(set(msgs)) == n and all(msgs)
assert lib.dfm_strerror(9999).decode() == "unknown status code"
lib.dfm_rng_uniform.restype = ctypes.c_double
lib.dfm_rng_uniform.argtypes = [ctypes.c_uint64, ctypes.c_uint, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32]
u = lib.dfm_rng_uniform(1, 0, 2, 3, 4)
assert 0.0 <= u < 1.0 and u == lib.dfm_rng_uniform(1, 0, 2, 3, 4)
print("python ctypes:", got, msgs[1])
PY
