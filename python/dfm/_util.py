"""Array validation, callback trampolines and the handle base class."""
import collections
import ctypes
import inspect
import threading
import weakref

import numpy as np

from . import _lib
from .errors import DfmError

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
I32 = np.dtype(np.int32)
U8 = np.dtype(np.uint8)

_CT = {F32: ctypes.c_float, F64: ctypes.c_double, I32: ctypes.c_int32, U8: ctypes.c_uint8}


def arr(x, dtype, shape, name, writable=False, optional=False):
    """Validates a bulk buffer: a numpy.ndarray of exactly dtype (TypeError otherwise), of the
    given shape (None entries are free; ValueError otherwise), C-contiguous (ValueError).
    Returns x itself (never a copy), or None when x is None and optional."""
    if x is None:
        if optional:
            return None
        raise TypeError("%s is required (a numpy.ndarray of %s)" % (name, dtype))
    if not isinstance(x, np.ndarray):
        raise TypeError("%s must be a numpy.ndarray of %s, got %s" % (name, dtype,
                                                                     type(x).__name__))
    if x.dtype != dtype:
        raise TypeError("%s must have dtype %s, got %s" % (name, dtype, x.dtype))
    if shape is not None:
        if x.ndim != len(shape) or any(w is not None and w != g for w, g in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
            raise ValueError("%s must have shape %s, got %s" % (name, want, x.shape))
    if not x.flags.c_contiguous:
        raise ValueError("%s must be C-contiguous (use numpy.ascontiguousarray)" % name)
    if writable and not x.flags.writeable:
        raise ValueError("%s must be writable" % name)
    return x


def ptr(x):
    """ctypes pointer to the data of a validated array (NULL pointer for None)."""
    if x is None:
        return None
    return x.ctypes.data_as(ctypes.POINTER(_CT[x.dtype]))


def check_size(n, name):
    n = int(n)
    if n < 0:
        raise ValueError("%s must be >= 0, got %d" % (name, n))
    return n


def view(p, shape, dtype, readonly):
    """A numpy view of C memory (valid only during the callback that received it)."""
    n = 1
    for s in shape:
        n *= s
    if n == 0 or not p:
        a = np.zeros(shape, dtype=dtype)
    else:
        a = np.ctypeslib.as_array(p, shape=shape)
    if readonly:
        a.flags.writeable = False
    return a


# ---- callbacks ----

class Callback:
    """A Python function wrapped as a C callback. The trampoline catches every exception
    (BaseException included), keeps the first one in .error and returns nonzero to libdfm, so
    no Python exception ever unwinds through C frames."""

    def __init__(self, cfunctype, adapter, name):
        self.error = None
        self.name = name
        me = weakref.ref(self)

        def trampoline(*args):
            try:
                rc = adapter(*args)
                return 0 if rc is None else int(rc)
            except BaseException as e:  # noqa: B902 -- nothing may cross into C
                cb = me()
                if cb is not None and cb.error is None:
                    cb.error = e
                return 1
        self.c = cfunctype(trampoline)

    def take(self):
        e, self.error = self.error, None
        return e


ModelInfo = collections.namedtuple("ModelInfo", "row_offset step branch rows part_t",
                                   defaults=(None,))
ModelInfo.__doc__ = """What a model call is for: row_offset (global index of row 0), step
(sampler step or -1), branch (BRANCH_MAIN / BRANCH_UNCOND), rows, and part_t: the per-part
times of a product space, a read-only (rows, n_part_t) float64 view, or None."""

_IO_BRANCH_END = _lib.dfm_model_io.branch.offset + ctypes.sizeof(ctypes.c_int)
_IO_STEP_END = _lib.dfm_model_io.step.offset + ctypes.sizeof(ctypes.c_int)
_IO_PART_END = _lib.dfm_model_io.n_part_t.offset + ctypes.sizeof(ctypes.c_size_t)


def _wants_info(fn, n_plain):
    """True when fn accepts one more positional argument than n_plain."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    n = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n > n_plain


def io_views(io):
    rows = io.rows
    t = view(io.t, (rows,), F64, True)
    tokens = view(io.tokens, (rows, io.n_tokens), I32, True) if io.tokens else None
    reals = view(io.reals, (rows, io.n_reals), F32, True) if io.reals else None
    branch = io.branch if io.struct_size >= _IO_BRANCH_END else 0
    step = io.step if io.struct_size >= _IO_STEP_END else -1
    part_t = None
    if io.struct_size >= _IO_PART_END and io.part_t and io.n_part_t:
        part_t = view(io.part_t, (rows, io.n_part_t), F64, True)
    info = ModelInfo(io.row_offset, step, branch, rows, part_t)
    return t, tokens, reals, info


def model_callback(model):
    """Wraps model(t, tokens, reals, out[, info]) as a dfm_model_fn. t: (rows,) float64,
    tokens: (rows, n_tokens) int32 or None, reals: (rows, n_reals) float32 or None (all
    read-only views), out: (rows, out_stride) float32 to fill. A returned array (not None) is
    copied into out."""
    if not callable(model):
        raise TypeError("model must be callable")
    with_info = _wants_info(model, 4)

    def adapter(io_p, _ud):
        io = io_p.contents
        t, tokens, reals, info = io_views(io)
        out = view(io.out, (io.rows, io.out_stride), F32, False)
        r = model(t, tokens, reals, out, info) if with_info else model(t, tokens, reals, out)
        if r is not None:
            out[...] = r
        return 0
    return Callback(_lib.model_fn, adapter, "model")


def progress_callback(progress):
    """Wraps progress(step, n_steps, t) -> truthy to stop."""
    if not callable(progress):
        raise TypeError("progress must be callable")

    def adapter(step, n_steps, t, _ud):
        return 1 if progress(step, n_steps, t) else 0
    return Callback(_lib.progress_fn, adapter, "progress")


def scalar_callback(fn, cfunctype, name):
    """Wraps fn(x) -> float for callbacks of the form int f(double x, double *out, void *)."""
    if not callable(fn):
        raise TypeError("%s must be callable" % name)

    def adapter(x, out, _ud):
        out[0] = float(fn(x))
        return 0
    return Callback(cfunctype, adapter, name)


def raise_error(status, function, message="", callbacks=(), callback_status=0):
    """Raises for a nonzero status: the original exception of a failed Python callback (chained
    from the DfmError carrying libdfm's status and message), else the DfmError itself."""
    err = DfmError(status, message, function, callback_status)
    orig = None
    for cb in callbacks:
        e = cb.take()
        if e is not None and orig is None:
            orig = e
    if orig is not None:
        raise orig.with_traceback(orig.__traceback__) from err
    raise err


def clear(callbacks):
    for cb in callbacks:
        cb.error = None


# ---- handle base ----

class Handle:
    """Owns one libdfm handle. close() frees it (idempotent); so does garbage collection
    (__del__) and leaving a `with` block. Handles may be freed in any order: libdfm copies what
    it needs, and the Python callbacks a handle (or its copies) may call are kept alive by
    every handle that can reach them."""
    _free_name = None
    _err_name = None
    _cbs_name = None

    def __init__(self, ptr_value, callbacks=()):
        self._h = ptr_value
        self._cbs = list(callbacks)   # Callback objects the C handle may call
        # libdfm allows one call per handle at a time: calls from several Python threads are
        # serialized here (re-entrant, so a callback may use its own handle's getters).
        self._lock = threading.RLock()
        self._depth = 0               # calls in progress (on the thread holding the lock)

    @property
    def _ptr(self):
        if not self._h:
            raise ValueError("%s is closed" % type(self).__name__)
        return self._h

    @property
    def closed(self):
        return not self._h

    def close(self):
        """Frees the libdfm handle (idempotent)."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._depth:
                raise RuntimeError("a %s cannot be closed from inside its own callbacks"
                                   % type(self).__name__)
            h, self._h = self._h, None
            if h:
                getattr(_lib.lib, self._free_name)(h)

    def __copy__(self):
        clone = getattr(self, "clone", None)
        if clone is None:
            raise TypeError("%s cannot be copied" % type(self).__name__)
        return clone()

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __reduce_ex__(self, protocol):
        raise TypeError("%s wraps a libdfm handle and cannot be pickled" % type(self).__name__)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def last_error(self):
        """The handle's last error message ("" when the last call succeeded)."""
        if self._err_name is None:
            return ""
        m = getattr(_lib.lib, self._err_name)(self._ptr)
        return m.decode("utf-8", "replace") if m else ""

    def callback_status(self):
        """Raw value of the last failed callback on this handle (0 if none)."""
        if self._cbs_name is None:
            return 0
        return getattr(_lib.lib, self._cbs_name)(self._ptr)

    def _check(self, status, function, extra_cbs=()):
        if status:
            cbs = list(extra_cbs) + self._cbs
            raise_error(status, function, self.last_error(), cbs, self.callback_status())

    def _call(self, function, *args, extra_cbs=()):
        cbs = list(extra_cbs) + self._cbs
        with self._lock:
            clear(cbs)
            h = self._ptr
            self._depth += 1
            try:
                st = getattr(_lib.lib, function)(h, *args)
            finally:
                self._depth -= 1
            self._check(st, function, extra_cbs)
        return st


def create(function, *args, callbacks=()):
    """Calls a dfm_*_create* function; returns the new handle pointer or raises."""
    out = ctypes.c_void_p()
    clear(callbacks)
    st = getattr(_lib.lib, function)(ctypes.byref(out), *args)
    if st:
        raise_error(st, function, "", callbacks)
    return out.value
