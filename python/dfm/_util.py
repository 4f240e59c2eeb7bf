"""Array validation, callback trampolines and the handle base class."""
import collections
import ctypes
import inspect
import operator
import threading
import weakref

import numpy as np

from . import _lib
from . import constants as _C
from .errors import DfmError, last_error

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
I32 = np.dtype(np.int32)
U8 = np.dtype(np.uint8)

_CT = {F32: ctypes.c_float, F64: ctypes.c_double, I32: ctypes.c_int32, U8: ctypes.c_uint8}


INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
SIZE_MAX = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1

_HOW = {F32: "x.astype(numpy.float32) / tensor.float()", F64: "x.astype(numpy.float64)",
        I32: "x.astype(numpy.int32)", U8: "a bool or uint8 array"}


def as_ndarray(x, name):
    """A numpy.ndarray over the memory of an array-like, without a copy when the object allows:
    numpy arrays as they are; objects with __array__ / __array_interface__ (PyTorch CPU tensors,
    whose __array__ is a writable view of the tensor's memory) through numpy.asarray; objects
    with only __dlpack__ through numpy.from_dlpack (read-only view); buffer-protocol objects
    (array.array, memoryview) through memoryview. TypeError for anything else, and for a
    tensor that cannot be viewed (on a GPU, or requiring grad: use .detach().cpu())."""
    if isinstance(x, np.ndarray):
        return x
    try:
        if hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
            return np.asarray(x)
        if hasattr(x, "__dlpack__"):
            return np.from_dlpack(x)
        return np.asarray(memoryview(x))
    except (RuntimeError, TypeError, ValueError, BufferError, AttributeError) as e:
        raise TypeError("%s: a %s cannot be viewed as a numpy array (%s)"
                        % (name, type(x).__name__, e)) from e


def _to_int32(a, name):
    """Integer array -> int32; a value outside int32 raises DfmError(ERANGE) naming it (it is
    outside every vocabulary too), nothing wraps."""
    if a.size and (int(a.min()) < INT32_MIN or int(a.max()) > INT32_MAX):
        bad = (a < INT32_MIN) | (a > INT32_MAX)
        idx = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape)
        pos = ("[row %d][coord %d]" % idx if len(idx) == 2
               else "".join("[%d]" % i for i in idx))
        raise DfmError(_C.ERANGE, "%s%s = %d is outside the int32 range of tokens"
                       % (name, pos, int(a[idx])))
    return a.astype(I32)


def _convert(a, dtype, name, from_list):
    """a (an ndarray) as dtype, by the package's conversion rules (docs/python.md, Arrays)."""
    if a.dtype == dtype:
        return a
    if a.dtype.kind == dtype.kind and a.dtype.itemsize == dtype.itemsize:
        return a.astype(dtype)                   # the other byte order: same values
    k = a.dtype.kind
    if dtype == I32 and k in "iu":
        return _to_int32(a, name)
    if dtype == F64 and (k in "iu" or (k == "f" and a.dtype.itemsize <= 8)):
        return a.astype(F64)
    if dtype == U8 and k == "b":
        return a.view(U8)
    if dtype == F32 and (from_list or a.size == 0) and k in "iuf":
        return a.astype(F32)
    if from_list and a.size == 0:
        return a.astype(dtype)
    if dtype == F32 and k == "f":
        raise TypeError("%s must have dtype float32, got %s: the package does not round to "
                        "float32 silently (convert with %s)" % (name, a.dtype, _HOW[F32]))
    raise TypeError("%s must have dtype %s, got %s (%s)" % (name, dtype, a.dtype, _HOW[dtype]))


def check_shape(a, shape, name):
    if shape is not None:
        if a.ndim != len(shape) or any(w is not None and w != g for w, g in zip(shape, a.shape)):
            want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
            raise ValueError("%s must have shape %s, got %s" % (name, want, a.shape))


def arr(x, dtype, shape, name, writable=False, optional=False):
    """A bulk input buffer as a C-contiguous numpy array of exactly dtype and shape (None
    entries free; ValueError otherwise). x: a numpy array, a PyTorch CPU tensor or any object
    as_ndarray takes, or a list / tuple. Used as is (no copy) when it already has the dtype and
    is C-contiguous; else converted to a new array: a list / tuple; a non-contiguous array; a
    time / probability (float64) given as float32 or integers; tokens (int32) given as another
    integer dtype (values outside int32 raise DfmError ERANGE); a bool mask viewed as uint8.
    float32 buffers are never rounded from float64 (TypeError), and floats are never truncated
    to tokens (TypeError). writable=True: an output the caller gives, see out_arr."""
    if x is None:
        if optional:
            return None
        raise TypeError("%s is required (an array of %s)" % (name, dtype))
    if writable:
        return out_arr(x, dtype, shape, name)
    from_list = isinstance(x, (list, tuple))
    if from_list:
        try:
            a = np.asarray(x)
        except ValueError as e:
            raise ValueError("%s: %s" % (name, e)) from e
        if a.dtype.kind not in "biuf":
            raise TypeError("%s: a list of %s cannot be a %s buffer" % (name, a.dtype, dtype))
    else:
        a = as_ndarray(x, name)
    a = _convert(a, dtype, name, from_list)
    check_shape(a, shape, name)
    if not (a.flags.c_contiguous and a.flags.aligned):
        a = np.ascontiguousarray(a)
        if not a.flags.aligned:
            a = a.copy()
    return a


def out_arr(x, dtype, shape, name):
    """An output buffer the caller gives (filled in place): an array or tensor of exactly dtype
    and shape, C-contiguous and writable, viewed without a copy, so what libdfm writes lands in
    the caller's memory. Anything that would need a copy is refused (TypeError / ValueError)."""
    if isinstance(x, (list, tuple)):
        raise TypeError("%s must be an array to write into (numpy array or CPU tensor), got a "
                        "%s" % (name, type(x).__name__))
    a = as_ndarray(x, name)
    if a.dtype != dtype:
        raise TypeError("%s must have dtype %s to be written in place, got %s"
                        % (name, dtype, a.dtype))
    check_shape(a, shape, name)
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise ValueError("%s must be C-contiguous to be written in place (results would land in "
                         "a copy); use numpy.ascontiguousarray / tensor.contiguous() and pass "
                         "that" % name)
    if not a.flags.writeable:
        raise ValueError("%s must be writable (a read-only view, e.g. numpy.from_dlpack, cannot "
                         "receive results)" % name)
    return a


def uint_arg(v, bits, name):
    """An integer in [0, 2**bits) (seeds, draw indices, steps): TypeError for a non-integer
    (float, bool, str), ValueError outside the range; never wrapped."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError("%s must be an integer, got %r" % (name, v))
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError("%s must be an integer, got %s %r" % (name, type(v).__name__, v)) from None
    if not 0 <= i < (1 << bits):
        raise ValueError("%s must be in [0, 2**%d), got %d" % (name, bits, i))
    return i


def int64_arg(v, name):
    """An integer in int64 (option values): TypeError for a non-integer, ValueError outside."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError("%s must be an integer, got %s %r" % (name, type(v).__name__, v)) from None
    if not -(1 << 63) <= i < (1 << 63):
        raise ValueError("%s must be in the int64 range, got %d" % (name, i))
    return i


def ptr(x):
    """ctypes pointer to the data of a validated array (NULL pointer for None)."""
    if x is None:
        return None
    return x.ctypes.data_as(ctypes.POINTER(_CT[x.dtype]))


def check_size(n, name):
    """A count or offset: an integer in [0, SIZE_MAX] (TypeError for floats, never wrapped)."""
    if isinstance(n, (bool, np.bool_)):
        raise TypeError("%s must be an integer, got %r" % (name, n))
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError("%s must be an integer, got %s %r" % (name, type(n).__name__, n)) from None
    if n < 0:
        raise ValueError("%s must be >= 0, got %d" % (name, n))
    if n > SIZE_MAX:
        raise ValueError("%s must be <= %d, got %d" % (name, SIZE_MAX, n))
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


ModelInfo = collections.namedtuple("ModelInfo", "row_offset step branch rows part_t row_index",
                                   defaults=(None, None))
ModelInfo.__doc__ = """What a model call is for: row_offset (global index of row 0), step
(sampler step or -1), branch (BRANCH_MAIN / BRANCH_UNCOND), rows, part_t: the per-part
times of a product space, a read-only (rows, n_part_t) float64 view, or None, and row_index:
the global index of each row, a read-only (rows,) uint64 view, when a discrete sampler with
time_independent sends only the rows that changed (None when the rows are consecutive from
row_offset)."""

_IO_BRANCH_END = _lib.dfm_model_io.branch.offset + ctypes.sizeof(ctypes.c_int)
_IO_STEP_END = _lib.dfm_model_io.step.offset + ctypes.sizeof(ctypes.c_int)
_IO_PART_END = _lib.dfm_model_io.n_part_t.offset + ctypes.sizeof(ctypes.c_size_t)
_IO_INDEX_END = _lib.dfm_model_io.row_index.offset + ctypes.sizeof(ctypes.c_void_p)


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
    """(t, tokens, reals, info) of a dfm_model_io for a Python callback: writable copies of
    libdfm's const inputs (the library's buffers stay untouched whatever the callback does, and
    torch.from_numpy takes them without a warning); None where the call has none."""
    rows = io.rows
    t = view(io.t, (rows,), F64, True).copy()
    tokens = view(io.tokens, (rows, io.n_tokens), I32, True).copy() if io.tokens else None
    reals = view(io.reals, (rows, io.n_reals), F32, True).copy() if io.reals else None
    branch = io.branch if io.struct_size >= _IO_BRANCH_END else 0
    step = io.step if io.struct_size >= _IO_STEP_END else -1
    part_t = None
    if io.struct_size >= _IO_PART_END and io.part_t and io.n_part_t:
        part_t = view(io.part_t, (rows, io.n_part_t), F64, True).copy()
    row_index = None
    if io.struct_size >= _IO_INDEX_END and io.row_index:
        row_index = view(io.row_index, (rows,), np.uint64, True).copy()
    info = ModelInfo(io.row_offset, step, branch, rows, part_t, row_index)
    return t, tokens, reals, info


OUT_SHAPES = ("2d", "3d")


def out_shape_arg(out_shape):
    if out_shape not in OUT_SHAPES:
        raise ValueError("out_shape must be \"2d\" (rows, out_stride) or \"3d\" (rows, d, V), "
                         "got %r" % (out_shape,))
    return out_shape


def token_split(n_tokens, n_reals, stride):
    """(d, V) when a row of stride floats is d blocks of V per-token values (a token-only
    space, stride = d * V), else None."""
    if n_tokens and not n_reals and stride and stride % n_tokens == 0:
        return n_tokens, stride // n_tokens
    return None


def shaped_view(a, io, out_shape, name):
    """a (rows, out_stride) as the model sees it: itself for "2d", (rows, d, V) for "3d"."""
    if out_shape == "2d":
        return a
    split = token_split(io.n_tokens, io.n_reals, io.out_stride)
    if split is None:
        raise ValueError("out_shape=\"3d\" needs a token-only output of d x V values per row; "
                         "this %s has %d tokens, %d reals and %d values per row"
                         % (name, io.n_tokens, io.n_reals, io.out_stride))
    return a.reshape(io.rows, split[0], split[1])


def store_result(out, r, io, name):
    """Copies a model's returned array (numpy, tensor, list) into out (rows, out_stride); a
    (rows, d, V) result of a token-only output is accepted too."""
    if isinstance(r, (list, tuple, int, float, np.generic)):
        r = np.asarray(r)
    elif not isinstance(r, np.ndarray):
        r = as_ndarray(r, name + " result")
    split = token_split(io.n_tokens, io.n_reals, io.out_stride)
    if split is not None and r.shape == (io.rows,) + split:
        r = r.reshape(io.rows, io.out_stride)
    out[...] = r


def model_callback(model, out_shape="2d"):
    """Wraps model(t, tokens, reals, out[, info]) as a dfm_model_fn. t: (rows,) float64,
    tokens: (rows, n_tokens) int32 or None, reals: (rows, n_reals) float32 or None (writable
    copies), out: libdfm's output buffer to fill in place, (rows, out_stride) float32, or
    (rows, d, V) with out_shape="3d". A returned array (not None) is copied into out; it may
    have either shape."""
    if not callable(model):
        raise TypeError("model must be callable")
    out_shape_arg(out_shape)
    with_info = _wants_info(model, 4)

    def adapter(io_p, _ud):
        io = io_p.contents
        t, tokens, reals, info = io_views(io)
        out = view(io.out, (io.rows, io.out_stride), F32, False)
        o = shaped_view(out, io, out_shape, "model")
        r = model(t, tokens, reals, o, info) if with_info else model(t, tokens, reals, o)
        if r is not None:
            store_result(out, r, io, "model")
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
    if not message and function:
        message = last_error()  # calls without a handle: read at once, on this thread
        if message.startswith(function + ": "):
            message = message[len(function) + 2:]
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
