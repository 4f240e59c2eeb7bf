"""Counter-based random numbers (Philox-4x32-10) and training-time sampling.

Every draw is a pure function of (seed, stream, row, coord, step): see docs/rng.md."""
import ctypes

import numpy as np

from . import _lib
from . import constants as C
from ._util import F32, F64, arr, check_size, ptr, raise_error, uint_arg

L = _lib.lib

TIME_KINDS = {"uniform": C.TIME_UNIFORM, "logit_normal": C.TIME_LOGIT_NORMAL,
              "stratified": C.TIME_STRATIFIED}
DRAW_KINDS = {"uniform": C.DRAW_UNIFORM, "normal": C.DRAW_NORMAL}


def _stream(stream):
    stream = uint_arg(stream, 32, "stream")
    if stream > C.STREAM_MAX:
        raise ValueError("stream must be in [0, %d], got %d" % (C.STREAM_MAX, stream))
    return stream


def _key(seed, stream, row, coord, step):
    """The draw key, every part range-checked (seed in [0, 2**64), row in [0, 2**56), coord and
    step in [0, 2**32)); nothing wraps."""
    return (uint_arg(seed, 64, "seed"), _stream(stream), uint_arg(row, 56, "row"),
            uint_arg(coord, 32, "coord"), uint_arg(step, 32, "step"))


def block(seed, stream=0, row=0, coord=0, step=0):
    """The raw Philox block: a uint32 array of 4 words."""
    out = (ctypes.c_uint32 * 4)()
    L.dfm_rng_block(*_key(seed, stream, row, coord, step), out)
    return np.array(list(out), dtype=np.uint32)


def uniform(seed, stream=0, row=0, coord=0, step=0):
    """Uniform double in [0, 1) keyed by (seed, stream, row, coord, step)."""
    return L.dfm_rng_uniform(*_key(seed, stream, row, coord, step))


def normal(seed, stream=0, row=0, coord=0, step=0):
    """Standard normal keyed by (seed, stream, row, coord, step)."""
    return L.dfm_rng_normal(*_key(seed, stream, row, coord, step))


def categorical(logits, seed, stream=0, row=0, coord=0, step=0, temperature=1.0):
    """Index j with probability softmax(logits / temperature)_j (logits: float32 1-D array;
    temperature 0: argmax). DfmError ENUMERIC for NaN/+Inf or all -Inf logits."""
    logits = arr(logits, F32, (None,), "logits")
    out = ctypes.c_int32()
    st = L.dfm_rng_categorical(*_key(seed, stream, row, coord, step), ptr(logits),
                               logits.shape[0], float(temperature), ctypes.byref(out))
    if st:
        raise_error(st, "dfm_rng_categorical")
    return out.value


def categorical_weights(weights, seed, stream=0, row=0, coord=0, step=0):
    """Index j with probability weights_j / sum(weights) (float64 1-D array, >= 0)."""
    weights = arr(weights, F64, (None,), "weights")
    out = ctypes.c_int32()
    st = L.dfm_rng_categorical_weights(*_key(seed, stream, row, coord, step), ptr(weights),
                                       weights.shape[0], ctypes.byref(out))
    if st:
        raise_error(st, "dfm_rng_categorical_weights")
    return out.value


def fill(rows, cols, seed, kind="uniform", stream=0, row_offset=0, step=0, threads=1, out=None):
    """A (rows, cols) float32 array of draws keyed by (seed, stream, row_offset + r, c, step);
    kind "uniform" or "normal". out: an optional float32 (rows, cols) C-contiguous array or
    tensor to fill in place (returned; no copy is made, so the draws land in it)."""
    rows, cols = check_size(rows, "rows"), check_size(cols, "cols")
    k = DRAW_KINDS[kind] if isinstance(kind, str) else int(kind)
    if out is None:
        out = np.empty((rows, cols), np.float32)
    dst = arr(out, F32, (rows, cols), "out", writable=True)
    st = L.dfm_rng_fill(uint_arg(seed, 64, "seed"), _stream(stream), k,
                        check_size(row_offset, "row_offset"), rows, cols,
                        uint_arg(step, 32, "step"), uint_arg(threads, 31, "threads"), ptr(dst))
    if st:
        raise_error(st, "dfm_rng_fill")
    return out


def time_sample(rows, seed, draw=0, kind="uniform", p1=0.0, p2=1.0, eps=0.0, row_offset=0):
    """Training times t[rows] (float64) in [0, 1 - eps]: kind "uniform", "logit_normal"
    (sigmoid(p1 + p2 N(0, 1))) or "stratified" (p1 strata, 0: rows). See dfm_time_sample."""
    rows = check_size(rows, "rows")
    k = TIME_KINDS[kind] if isinstance(kind, str) else int(kind)
    t = np.empty(rows, np.float64)
    st = L.dfm_time_sample(uint_arg(seed, 64, "seed"), uint_arg(draw, 32, "draw"), k, float(p1),
                           float(p2), float(eps), check_size(row_offset, "row_offset"), rows,
                           ptr(t))
    if st:
        raise_error(st, "dfm_time_sample")
    return t
