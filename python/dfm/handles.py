"""Pythonic classes over libdfm's handles: Space, Scheduler, Path, Generator, Loss, Sampler."""
import collections
import ctypes

import numpy as np

from . import _lib
from . import constants as C
from ._states import n_states
from ._util import (F32, F64, I32, U8, Callback, Handle, arr, check_size, clear, create,
                    check_shape, int64_arg, io_views, model_callback, out_arr, out_shape_arg,
                    progress_callback, ptr, raise_error, scalar_callback, token_split,
                    uint_arg, view)

L = _lib.lib

METHODS = {"exact": C.METHOD_EXACT, "euler": C.METHOD_EULER, "midpoint": C.METHOD_MIDPOINT,
           "rk4": C.METHOD_RK4, "dopri5": C.METHOD_DOPRI5,
           "euler_maruyama": C.METHOD_EULER_MARUYAMA, "uniformization": C.METHOD_UNIFORMIZATION,
           "gillespie": C.METHOD_GILLESPIE, "tau_leaping": C.METHOD_TAU_LEAPING,
           "theta_trapezoidal": C.METHOD_THETA_TRAPEZOIDAL}
PARAMS = {"logits": C.PARAM_LOGITS, "rates": C.PARAM_RATES, "velocity": C.PARAM_VELOCITY,
          "x1": C.PARAM_X1, "epsilon": C.PARAM_EPSILON, "score": C.PARAM_SCORE,
          "state_logits": C.PARAM_STATE_LOGITS}
SOURCES = {"mask": C.SOURCE_MASK, "uniform": C.SOURCE_UNIFORM}
REDUCTIONS = {"mean": C.REDUCE_MEAN, "sum": C.REDUCE_SUM, "none": C.REDUCE_NONE}
ORDERS = {"random": C.ORDER_RANDOM, "confidence": C.ORDER_CONFIDENCE, "margin": C.ORDER_MARGIN,
          "entropy": C.ORDER_ENTROPY}
COUNTS = {"coins": C.COUNT_COINS, "schedule": C.COUNT_SCHEDULE,
          "schedule_ceil": C.COUNT_SCHEDULE_CEIL, "threshold": C.COUNT_THRESHOLD}
REMASKS = {"none": C.REMASK_NONE, "cap": C.REMASK_CAP, "rescale": C.REMASK_RESCALE,
           "loop": C.REMASK_LOOP}
# Options whose int values also have names.
_NAMED = {"reduction": (REDUCTIONS, "reduction"), "order": (ORDERS, "order"),
          "count": (COUNTS, "count"), "remask": (REMASKS, "remask")}

# Named options: name -> (id, "i" int / "d" double).
OPTIONS = {
    "threads": (C.OPT_THREADS, "i"), "seed": (C.OPT_SEED, "i"), "spin_us": (C.OPT_SPIN_US, "i"),
    "reduction": (C.OPT_REDUCTION, "i"),
    "temperature": (C.OPT_DS_TEMPERATURE, "d"), "corrector": (C.OPT_DS_CORRECTOR, "d"),
    "eta": (C.OPT_DS_ETA, "d"), "purity": (C.OPT_DS_PURITY, "i"),
    "chunk_rows": (C.OPT_DS_CHUNK_ROWS, "i"),
    "order": (C.OPT_DS_ORDER, "i"), "count": (C.OPT_DS_COUNT, "i"),
    "block_len": (C.OPT_DS_BLOCK_LEN, "i"), "threshold": (C.OPT_DS_THRESHOLD, "d"),
    "greedy": (C.OPT_DS_GREEDY, "i"), "top_k": (C.OPT_DS_TOP_K, "i"),
    "top_p": (C.OPT_DS_TOP_P, "d"), "min_p": (C.OPT_DS_MIN_P, "d"),
    "remask": (C.OPT_DS_REMASK, "i"), "remask_eta": (C.OPT_DS_REMASK_ETA, "d"),
    "loop_start": (C.OPT_DS_LOOP_START, "d"), "loop_end": (C.OPT_DS_LOOP_END, "d"),
    "loop_kappa": (C.OPT_DS_LOOP_KAPPA, "d"), "theta": (C.OPT_DS_THETA, "d"),
    "time_independent": (C.OPT_DS_TIME_INDEPENDENT, "i"),
    "rate_bound": (C.OPT_CT_RATE_BOUND, "d"), "bound_safety": (C.OPT_CT_BOUND_SAFETY, "d"),
    "tmax": (C.OPT_CT_TMAX, "d"), "max_events": (C.OPT_CT_MAX_EVENTS, "i"),
    "atol": (C.OPT_ATOL, "d"), "rtol": (C.OPT_RTOL, "d"), "max_steps": (C.OPT_MAX_STEPS, "i"),
    "h_init": (C.OPT_H_INIT, "d"), "diffusion_g": (C.OPT_DIFFUSION_G, "d"),
}


def _enum(value, table, what):
    if isinstance(value, str):
        try:
            return table[value.lower()]
        except KeyError:
            raise ValueError("unknown %s %r (one of %s)" % (what, value, ", ".join(table)))
    if isinstance(value, (bool, float)) or not isinstance(value, (int, np.integer)):
        raise TypeError("%s must be a name or an int constant, got %r" % (what, value))
    return int(value)


def _isa(obj, cls, name):
    if not isinstance(obj, cls):
        raise TypeError("%s must be a dfm.%s, got %s" % (name, cls.__name__, type(obj).__name__))
    return obj


def _times(t, rows, name="t"):
    """t as a float64 (rows,) array: an array, tensor, list or tuple of rows times (float64 used
    as is, float32 / integers converted), or a scalar (also a 0-d array) broadcast to every
    row."""
    if isinstance(t, (bool, np.bool_)):
        raise TypeError("%s must be a time or an array of times, got %r" % (name, t))
    if not isinstance(t, (int, float, np.floating, np.integer)):
        t = arr(t, F64, None, name)
        if t.ndim != 0:
            check_shape(t, (rows,), name)
            return t
    if rows is None:
        raise ValueError("a scalar %s needs the row count" % name)
    return np.full(rows, float(t))


def _rows(x, dtype, n, name):
    """x converted as a (rows, n) buffer (or None), and its row count (or None)."""
    if x is None:
        return None, None
    x = arr(x, dtype, (None, n), name)
    return x, x.shape[0]


def _logits(x, rows, n_tokens, n_reals, stride, name):
    """A model output / logits buffer given as (rows, stride) or, for a token-only output of
    d x V values, as (rows, d, V): returned as the (rows, stride) float32 array (a view of the
    same memory) and the caller's shape."""
    split = token_split(n_tokens, n_reals, stride)
    x = arr(x, F32, None, name)
    if x.ndim == 3 and split is not None:
        check_shape(x, (rows, split[0], split[1]), name)
        return x.reshape(x.shape[0], stride), x.shape
    if x.ndim == 3:
        raise ValueError("%s: a (rows, d, V) array needs a token-only output of d x V values; "
                         "this one has %d tokens, %d reals and %d values per row"
                         % (name, n_tokens, n_reals, stride))
    check_shape(x, (rows, stride), name)
    return x, x.shape


class _Options:
    """Options (dfm_<handle>_set_int / _double) by name or by id."""
    _prefix = None
    _has_double = True

    def set_int(self, option, value):
        """An int64 option; the seed (OPT_SEED) is any integer in [0, 2**64) (libdfm keeps it
        as uint64). Out-of-range values and non-integers raise; nothing wraps."""
        option = int64_arg(option, "option")
        if option == C.OPT_SEED:
            value = uint_arg(value, 64, "seed")
            value = value - (1 << 64) if value >= 1 << 63 else value   # the same 64 bits
        else:
            value = int64_arg(value, "option %d value" % option)
        self._call("dfm_%s_set_int" % self._prefix, option, value)

    def get_int(self, option):
        option = int64_arg(option, "option")
        v = ctypes.c_int64()
        self._call("dfm_%s_get_int" % self._prefix, option, ctypes.byref(v))
        return v.value & ((1 << 64) - 1) if option == C.OPT_SEED else v.value

    def set_double(self, option, value):
        self._call("dfm_%s_set_double" % self._prefix, int64_arg(option, "option"),
                   float(value))

    def get_double(self, option):
        v = ctypes.c_double()
        self._call("dfm_%s_get_double" % self._prefix, int(option), ctypes.byref(v))
        return v.value

    def set_option(self, name, value):
        """Sets a named option (see dfm.handles.OPTIONS), e.g. set_option("seed", 7)."""
        oid, kind = OPTIONS[name] if isinstance(name, str) else (int(name), "i")
        if isinstance(name, str) and name in _NAMED:
            value = _enum(value, *_NAMED[name])
        (self.set_int if kind == "i" else self.set_double)(oid, value)

    def get_option(self, name):
        oid, kind = OPTIONS[name] if isinstance(name, str) else (int(name), "i")
        return (self.get_int if kind == "i" else self.get_double)(oid)

    def configure(self, **options):
        """set_option for each keyword; returns self."""
        for k, v in options.items():
            if k not in OPTIONS:
                raise ValueError("unknown option %r (one of %s)" % (k, ", ".join(OPTIONS)))
            self.set_option(k, v)
        return self

    @property
    def seed(self):
        return self.get_int(C.OPT_SEED)

    @seed.setter
    def seed(self, v):
        self.set_int(C.OPT_SEED, v)

    @property
    def threads(self):
        return self.get_int(C.OPT_THREADS)

    @threads.setter
    def threads(self, v):
        self.set_int(C.OPT_THREADS, v)


# ---------------------------------------------------------------- Space

SpacePart = collections.namedtuple("SpacePart", "kind vocab dim offset")


class Space(Handle):
    """A state space: Space.discrete(V, d), Space.euclidean(D), Space.product(a, b, ...)."""
    _free_name = "dfm_space_free"

    @classmethod
    def discrete(cls, vocab, d):
        """[vocab]^d (2 <= vocab <= dfm.MAX_VOCAB, d >= 1)."""
        return cls(create("dfm_space_create_discrete", int(vocab), check_size(d, "d"), None))

    @classmethod
    def euclidean(cls, dim):
        """R^dim (dim >= 1)."""
        return cls(create("dfm_space_create_euclidean", check_size(dim, "dim"), None))

    @classmethod
    def product(cls, *parts):
        """Product of spaces in order (parts are copied)."""
        if len(parts) == 1 and isinstance(parts[0], (list, tuple)):
            parts = tuple(parts[0])
        for i, p in enumerate(parts):
            _isa(p, Space, "parts[%d]" % i)
        a = (ctypes.c_void_p * max(1, len(parts)))(*[p._ptr for p in parts])
        return cls(create("dfm_space_create_product", a, len(parts), None))

    def clone(self):
        return Space(create("dfm_space_clone", self._ptr, None))

    @property
    def kind(self):
        return L.dfm_space_kind(self._ptr)

    @property
    def n_tokens(self):
        return L.dfm_space_n_tokens(self._ptr)

    @property
    def n_reals(self):
        return L.dfm_space_n_reals(self._ptr)

    @property
    def n_parts(self):
        return L.dfm_space_n_parts(self._ptr)

    @property
    def parts(self):
        out = []
        for i in range(self.n_parts):
            info = _lib.dfm_space_part()
            st = L.dfm_space_part_info(self._ptr, i, ctypes.byref(info))
            if st:
                raise_error(st, "dfm_space_part_info")
            out.append(SpacePart(info.kind, info.vocab, info.dim, info.offset))
        return out

    def token_vocab(self, j):
        """Vocabulary of token coordinate j (0 when out of range)."""
        return L.dfm_space_token_vocab(self._ptr, check_size(j, "j"))

    def check_tokens(self, tokens):
        """Raises DfmError(ERANGE) naming the first token outside its vocabulary."""
        tokens = arr(tokens, I32, (None, self.n_tokens), "tokens")
        bad = ctypes.c_size_t()
        st = L.dfm_space_check_tokens(self._ptr, ptr(tokens), tokens.shape[0], ctypes.byref(bad))
        if st:
            msg = ""
            if st == C.ERANGE:
                r, c = divmod(bad.value, max(1, self.n_tokens))
                msg = "token [%d, %d] = %d is outside its vocabulary" % (
                    r, c, int(tokens.flat[bad.value]))
            raise_error(st, "dfm_space_check_tokens", msg)

    def __repr__(self):
        if self.closed:
            return "<dfm.Space closed>"
        return "<dfm.Space kind=%d n_tokens=%d n_reals=%d>" % (self.kind, self.n_tokens,
                                                               self.n_reals)


# ---------------------------------------------------------------- Scheduler

SchedValues = collections.namedtuple("SchedValues", "alpha sigma d_alpha d_sigma")


class Scheduler(Handle):
    """The time functions of a path: condot, polynomial(n), cosine, linear_vp, vp(bmin, bmax),
    custom(fn, inverse=None)."""
    _free_name = "dfm_scheduler_free"

    @classmethod
    def condot(cls):
        return cls(create("dfm_scheduler_create_condot", None))

    @classmethod
    def polynomial(cls, n):
        return cls(create("dfm_scheduler_create_polynomial", float(n), None))

    @classmethod
    def cosine(cls):
        return cls(create("dfm_scheduler_create_cosine", None))

    @classmethod
    def linear_vp(cls):
        return cls(create("dfm_scheduler_create_linear_vp", None))

    @classmethod
    def vp(cls, beta_min=0.1, beta_max=20.0):
        return cls(create("dfm_scheduler_create_vp", float(beta_min), float(beta_max), None))

    @classmethod
    def custom(cls, fn, inverse=None):
        """fn(t) -> (alpha, sigma, d_alpha, d_sigma); inverse(kappa) -> t with alpha(t) = kappa
        (optional). Both may be called from libdfm's worker threads (under the GIL); an
        exception in them fails the libdfm call, which re-raises it."""
        if not callable(fn):
            raise TypeError("fn must be callable")

        def sched_adapter(t, out, _ud):
            a, s, da, ds = fn(t)
            v = out.contents
            v.alpha, v.sigma, v.d_alpha, v.d_sigma = float(a), float(s), float(da), float(ds)
            return 0
        cbs = [Callback(_lib.schedule_fn, sched_adapter, "scheduler")]
        inv_c = _lib.schedule_inverse_fn()
        if inverse is not None:
            cbs.append(scalar_callback(inverse, _lib.schedule_inverse_fn, "inverse"))
            inv_c = cbs[1].c
        h = create("dfm_scheduler_create_custom", cbs[0].c, inv_c, None, None, callbacks=cbs)
        return cls(h, cbs)

    def clone(self):
        return Scheduler(create("dfm_scheduler_clone", self._ptr, None), self._cbs)

    @property
    def kind(self):
        return L.dfm_scheduler_kind(self._ptr)

    def eval(self, t):
        """SchedValues(alpha, sigma, d_alpha, d_sigma) at t in [0, 1]."""
        v = _lib.dfm_sched_values()
        raw = ctypes.c_int()
        clear(self._cbs)
        st = L.dfm_scheduler_eval(self._ptr, float(t), ctypes.byref(v), ctypes.byref(raw))
        if st:
            raise_error(st, "dfm_scheduler_eval", "", self._cbs, raw.value)
        return SchedValues(v.alpha, v.sigma, v.d_alpha, v.d_sigma)

    def kappa_inverse(self, kappa):
        """The t with alpha(t) = kappa."""
        t = ctypes.c_double()
        raw = ctypes.c_int()
        clear(self._cbs)
        st = L.dfm_scheduler_kappa_inverse(self._ptr, float(kappa), ctypes.byref(t),
                                           ctypes.byref(raw))
        if st:
            raise_error(st, "dfm_scheduler_kappa_inverse", "", self._cbs, raw.value)
        return t.value


# ---------------------------------------------------------------- Path

PathSample = collections.namedtuple("PathSample", "xt_tokens xt_reals target_reals x0_reals")


class Path(_Options, Handle):
    """A probability path: Path.mixture, Path.affine, Path.metric, Path.finite."""
    _free_name = "dfm_path_free"
    _err_name = "dfm_path_last_error"
    _cbs_name = "dfm_path_callback_status"
    _prefix = "path"

    def __init__(self, h, callbacks=()):
        super().__init__(h, callbacks)
        sp = L.dfm_path_space(h)
        self.n_tokens = L.dfm_space_n_tokens(sp)
        self.n_reals = L.dfm_space_n_reals(sp)
        self.vocab = L.dfm_space_token_vocab(sp, 0) if self.n_tokens else 0

    def get_double(self, option):
        raise AttributeError("paths have no double options")

    def set_double(self, option, value):
        raise AttributeError("paths have no double options")

    @classmethod
    def mixture(cls, space, scheduler, source="uniform", mask_token=None):
        """Mixture path on [V]^d. source: "uniform", "mask" (mask_token defaults to V - 1) or V
        source probabilities (custom source: an array, tensor, list or tuple)."""
        _isa(space, Space, "space")
        _isa(scheduler, Scheduler, "scheduler")
        p0 = None
        if source is not None and not isinstance(source, (str, int, np.integer)):
            p0 = arr(source, F64, (space.token_vocab(0),), "source")
            src = C.SOURCE_CUSTOM
        else:
            src = _enum(source, SOURCES, "source")
        if mask_token is None:
            mask_token = space.token_vocab(0) - 1 if src == C.SOURCE_MASK else 0
        h = create("dfm_path_create_mixture", space._ptr, scheduler._ptr, src, int(mask_token),
                   ptr(p0), None, callbacks=scheduler._cbs)
        return cls(h, scheduler._cbs)

    @classmethod
    def affine(cls, space, scheduler):
        """Affine Gaussian path X_t = alpha_t X1 + sigma_t X0 on a Euclidean space."""
        _isa(space, Space, "space")
        _isa(scheduler, Scheduler, "scheduler")
        h = create("dfm_path_create_affine", space._ptr, scheduler._ptr, None,
                   callbacks=scheduler._cbs)
        return cls(h, scheduler._cbs)

    @classmethod
    def metric(cls, space, scheduler, c, dist):
        """Metric-induced path on [V]^d. dist: a (V, V) float64 distance matrix, or a function
        dist(x1, d) filling the float64 view d[V] with d(x, x1) (called V times at creation)."""
        _isa(space, Space, "space")
        _isa(scheduler, Scheduler, "scheduler")
        V = space.token_vocab(0)
        cbs = list(scheduler._cbs)
        if callable(dist):
            fn = dist

            def adapter(x1, d, vocab, _ud):
                fn(int(x1), view(d, (vocab,), F64, False))
                return 0
            cb = Callback(_lib.distance_fn, adapter, "distance")
            h = create("dfm_path_create_metric", space._ptr, scheduler._ptr, float(c), None,
                       cb.c, None, None, callbacks=[cb] + cbs)
            cbs.append(cb)   # the path may keep it (it is cached, but stay safe)
        else:
            dist = arr(dist, F64, (V, V), "dist")          # array, tensor or nested list
            h = create("dfm_path_create_metric", space._ptr, scheduler._ptr, float(c),
                       ptr(dist), _lib.distance_fn(), None, None, callbacks=cbs)
        return cls(h, cbs)

    @classmethod
    def finite(cls, space, fn):
        """Finite path on [V]^d with S = V^d states: fn(t, x1, p, dp) fills the float64 views
        p[S] = p_t(. | x1) and dp[S] = d/dt p_t(. | x1), x1 a flattened state."""
        _isa(space, Space, "space")
        if not callable(fn):
            raise TypeError("fn must be callable")

        def adapter(t, x1, p, dp, n, _ud):
            fn(t, int(x1), view(p, (n,), F64, False), view(dp, (n,), F64, False))
            return 0
        cb = Callback(_lib.cond_path_fn, adapter, "finite path")
        h = create("dfm_path_create_finite", space._ptr, cb.c, None, None, callbacks=[cb])
        return cls(h, [cb])

    def clone(self):
        return Path(create("dfm_path_clone", self._ptr, None), self._cbs)

    @property
    def kind(self):
        return L.dfm_path_kind(self._ptr)

    @property
    def space(self):
        """A copy of the path's space."""
        return Space(create("dfm_space_clone", L.dfm_path_space(self._ptr), None))

    @property
    def scheduler(self):
        """A copy of the path's scheduler, or None (finite paths)."""
        s = L.dfm_path_scheduler(self._ptr)
        return Scheduler(create("dfm_scheduler_clone", s, None), self._cbs) if s else None

    def sample(self, t, x1_tokens=None, x1_reals=None, *, x0_tokens=None, x0_reals=None,
               row_offset=0, draw=0, part_t=None):
        """x_t ~ p_t(. | x1) per row. Returns PathSample(xt_tokens, xt_reals, target_reals,
        x0_reals): the continuous conditional velocity target and the x0 used (None for
        discrete-only paths). part_t: optional (rows, n_parts) float64 per-part times
        (dfm_path_sample_parts; see Path.sample_parts)."""
        nt, nr = self.n_tokens, self.n_reals
        if nt == 0 and (x1_tokens is not None or x0_tokens is not None):
            raise ValueError("the path's space has no tokens")
        if nr == 0 and (x1_reals is not None or x0_reals is not None):
            raise ValueError("the path's space has no reals")
        x1_tokens, rows = _rows(x1_tokens, I32, nt, "x1_tokens")
        x1_reals, rows_r = _rows(x1_reals, F32, nr, "x1_reals")
        rows = rows if rows is not None else rows_r
        if part_t is not None:
            part_t = arr(part_t, F64, (rows, L.dfm_path_n_parts(self._ptr)), "part_t")
            rows = part_t.shape[0]
        t = _times(t, rows)
        rows = t.shape[0]
        x1_tokens = arr(x1_tokens, I32, (rows, nt), "x1_tokens", optional=nt == 0)
        x0_tokens = arr(x0_tokens, I32, (rows, nt), "x0_tokens", optional=True)
        x1_reals = arr(x1_reals, F32, (rows, nr), "x1_reals", optional=nr == 0)
        x0_reals = arr(x0_reals, F32, (rows, nr), "x0_reals", optional=True)
        xt_t = np.empty((rows, nt), np.int32) if nt else None
        xt_r = np.empty((rows, nr), np.float32) if nr else None
        tg = np.empty((rows, nr), np.float32) if nr else None
        x0o = np.empty((rows, nr), np.float32) if nr else None
        a = _lib.dfm_path_sample_args()
        a.struct_size = ctypes.sizeof(a)
        a.rows, a.row_offset = rows, check_size(row_offset, "row_offset")
        a.draw = uint_arg(draw, 32, "draw")
        a.t = ptr(t)
        a.x1_tokens, a.x0_tokens, a.xt_tokens = ptr(x1_tokens), ptr(x0_tokens), ptr(xt_t)
        a.x1_reals, a.x0_reals, a.xt_reals = ptr(x1_reals), ptr(x0_reals), ptr(xt_r)
        a.target_reals, a.x0_reals_out = ptr(tg), ptr(x0o)
        if part_t is None:
            self._call("dfm_path_sample", ctypes.byref(a))
        else:
            self._call("dfm_path_sample_parts", ctypes.byref(a), ptr(part_t))
        return PathSample(xt_t, xt_r, tg, x0o)

    def _n_cond(self):
        if self.kind == C.PATH_FINITE:
            return n_states(L.dfm_path_space(self._ptr))
        return self.vocab

    def cond_probs(self, t, x1):
        """Finite: p_t(. | x1) over the S states (x1 a flattened state); metric: over the V
        values of one coordinate (x1 a token). float64 array."""
        n = self._n_cond()
        out = np.empty(n, np.float64)
        self._call("dfm_path_cond_probs", float(t), int(x1), ptr(out))
        return out

    def cond_rates(self, t, x1):
        """The conditional (kinetic-optimal) generator at t < 1: an (n, n) float64 matrix."""
        n = self._n_cond()
        out = np.empty((n, n), np.float64)
        self._call("dfm_path_cond_rates", float(t), int(x1), ptr(out))
        return out

    def affine_convert(self, from_param, to_param, t, xt, x):
        """Converts model outputs x (rows, D) between "velocity", "x1", "epsilon", "score" at
        states xt (rows, D), times t (rows,). Returns a new float32 array."""
        fp = _enum(from_param, PARAMS, "parameterization")
        tp = _enum(to_param, PARAMS, "parameterization")
        xt = arr(xt, F32, (None, self.n_reals), "xt")
        rows = xt.shape[0]
        t = _times(t, rows)
        x = arr(x, F32, (rows, self.n_reals), "x")
        out = np.empty_like(x)
        self._call("dfm_affine_convert", fp, tp, rows, ptr(t), ptr(xt), ptr(x), ptr(out))
        return out


# ---------------------------------------------------------------- Generator

class Generator(_Options, Handle):
    """Dynamics from model output: factorized, velocity, diffusion, rate_matrix, metric."""
    _free_name = "dfm_generator_free"
    _err_name = "dfm_generator_last_error"
    _cbs_name = "dfm_generator_callback_status"
    _prefix = "generator"

    def __init__(self, h, callbacks=(), n_tokens=None, n_reals=None):
        super().__init__(h, callbacks)
        p = L.dfm_generator_path(h)
        if n_tokens is None:
            sp = L.dfm_path_space(p)
            n_tokens, n_reals = L.dfm_space_n_tokens(sp), L.dfm_space_n_reals(sp)
        self.n_tokens, self.n_reals = n_tokens, n_reals
        self._extra = {}

    @classmethod
    def factorized(cls, path, param="logits"):
        """Factorized generator of a mixture path: param "logits" (posterior) or "rates"."""
        _isa(path, Path, "path")
        h = create("dfm_generator_create_factorized", path._ptr, _enum(param, PARAMS, "param"),
                   None, callbacks=path._cbs)
        return cls(h, path._cbs)

    @classmethod
    def velocity(cls, path, param="velocity"):
        """ODE generator of an affine path; param "velocity", "x1", "epsilon" or "score"."""
        _isa(path, Path, "path")
        h = create("dfm_generator_create_velocity", path._ptr, _enum(param, PARAMS, "param"),
                   None, callbacks=path._cbs)
        return cls(h, path._cbs)

    @classmethod
    def diffusion(cls, path, param="velocity", g=1.0):
        """SDE generator with the marginals of an affine path; g: a constant >= 0 or a function
        g(t) -> float."""
        _isa(path, Path, "path")
        g_const = 0.0 if callable(g) else float(g)
        h = create("dfm_generator_create_diffusion", path._ptr, _enum(param, PARAMS, "param"),
                   g_const, None, callbacks=path._cbs)
        gen = cls(h, path._cbs)
        if callable(g):
            gen.set_diffusion_fn(g)
        return gen

    @classmethod
    def rate_matrix(cls, path=None, space=None, param="state_logits"):
        """Rate-matrix generator on a finite space (a finite/metric path, or a space for
        param "rates")."""
        if path is None and space is None:
            raise TypeError("give path or space")
        if path is not None:
            _isa(path, Path, "path")
        if space is not None:
            _isa(space, Space, "space")
        sp = L.dfm_path_space(path._ptr) if path is not None else space._ptr
        cbs = path._cbs if path is not None else []
        h = create("dfm_generator_create_rate_matrix", path._ptr if path is not None else None,
                   space._ptr if space is not None else None, _enum(param, PARAMS, "param"),
                   None, callbacks=cbs)
        return cls(h, cbs, L.dfm_space_n_tokens(sp), L.dfm_space_n_reals(sp))

    @classmethod
    def metric(cls, path):
        """Factorized generator of a metric path (posterior logits d x V)."""
        _isa(path, Path, "path")
        h = create("dfm_generator_create_metric", path._ptr, None, callbacks=path._cbs)
        return cls(h, path._cbs)

    def clone(self):
        g = Generator(create("dfm_generator_clone", self._ptr, None), self._cbs, self.n_tokens,
                      self.n_reals)
        return g

    @property
    def kind(self):
        return L.dfm_generator_kind(self._ptr)

    @property
    def parameterization(self):
        return L.dfm_generator_parameterization(self._ptr)

    @property
    def out_stride(self):
        """Floats per row the model writes."""
        return L.dfm_generator_out_stride(self._ptr)

    @property
    def path(self):
        """A copy of the generator's path, or None."""
        p = L.dfm_generator_path(self._ptr)
        return Path(create("dfm_path_clone", p, None), self._cbs) if p else None

    def set_diffusion_fn(self, g):
        """g(t) -> float >= 0 replaces the constant diffusion (None: back to the constant)."""
        if g is None:
            self._call("dfm_generator_set_diffusion_fn", _lib.diffusion_fn(), None)
            self._cbs = [c for c in self._cbs if c is not self._extra.pop("diffusion", None)]
            return
        cb = scalar_callback(g, _lib.diffusion_fn, "diffusion")
        self._call("dfm_generator_set_diffusion_fn", cb.c, None, extra_cbs=[cb])
        old = self._extra.pop("diffusion", None)
        self._cbs = [c for c in self._cbs if c is not old] + [cb]
        self._extra["diffusion"] = cb

    def set_sampling_scheduler(self, scheduler):
        """Sample with another scheduler (schedule transform); None removes it."""
        if scheduler is None:
            self._call("dfm_generator_set_sampling_scheduler", None)
            return
        _isa(scheduler, Scheduler, "scheduler")
        self._call("dfm_generator_set_sampling_scheduler", scheduler._ptr,
                   extra_cbs=scheduler._cbs)
        self._cbs = self._cbs + [c for c in scheduler._cbs if c not in self._cbs]

    def mixture_rates(self, t, tokens, logits):
        """Marginal rates (rows, d, V) float32 from posterior logits (rows, d, V) or
        (rows, d * V) at states tokens (rows, d) and times t (rows,)."""
        d = self.n_tokens
        tokens = arr(tokens, I32, (None, d), "tokens")
        rows = tokens.shape[0]
        t = _times(t, rows)
        V = self.out_stride // d if d else 0
        logits, _ = _logits(logits, rows, d, self.n_reals, self.out_stride, "logits")
        out = np.empty((rows, d, V), np.float32)
        self._call("dfm_mixture_rates", rows, ptr(t), ptr(tokens), ptr(logits), ptr(out))
        return out


# ---------------------------------------------------------------- Loss

LossResult = collections.namedtuple("LossResult", "loss grad values")


class Loss(_Options, Handle):
    """Generator-matching losses: generalized_kl, cross_entropy, mse, bregman_rates."""
    _free_name = "dfm_loss_free"
    _err_name = "dfm_loss_last_error"
    _cbs_name = "dfm_loss_callback_status"
    _prefix = "loss"

    def __init__(self, h, callbacks, n_tokens, n_reals, out_stride, n_parts=1):
        super().__init__(h, callbacks)
        self.n_tokens, self.n_reals, self.out_stride = n_tokens, n_reals, out_stride
        self.n_parts = n_parts   # time values per row of eval(part_t=...)

    @classmethod
    def generalized_kl(cls, path):
        _isa(path, Path, "path")
        h = create("dfm_loss_create_generalized_kl", path._ptr, None, callbacks=path._cbs)
        return cls(h, path._cbs, path.n_tokens, 0, path.n_tokens * path.vocab)

    @classmethod
    def cross_entropy(cls, path, only_changed=False):
        _isa(path, Path, "path")
        h = create("dfm_loss_create_cross_entropy", path._ptr, int(bool(only_changed)), None,
                   callbacks=path._cbs)
        return cls(h, path._cbs, path.n_tokens, 0, path.n_tokens * path.vocab)

    @classmethod
    def mse(cls, generator):
        _isa(generator, Generator, "generator")
        h = create("dfm_loss_create_mse", generator._ptr, None, callbacks=generator._cbs)
        return cls(h, generator._cbs, 0, generator.n_reals, generator.out_stride)

    @classmethod
    def bregman_rates(cls, generator):
        _isa(generator, Generator, "generator")
        h = create("dfm_loss_create_bregman_rates", generator._ptr, None,
                   callbacks=generator._cbs)
        return cls(h, generator._cbs, generator.n_tokens, 0, generator.out_stride)

    def clone(self):
        return Loss(create("dfm_loss_clone", self._ptr, None), self._cbs, self.n_tokens,
                    self.n_reals, self.out_stride, self.n_parts)

    @property
    def kind(self):
        return L.dfm_loss_kind(self._ptr)

    @property
    def reduction(self):
        return self.get_int(C.OPT_REDUCTION)

    @reduction.setter
    def reduction(self, v):
        self.set_int(C.OPT_REDUCTION, _enum(v, REDUCTIONS, "reduction"))

    def eval(self, out, t, *, x1_tokens=None, xt_tokens=None, fixed=None, x0_reals=None,
             x1_reals=None, xt_reals=None, grad=True, part_t=None):
        """Loss value and gradient wrt the model output out: (rows, out_stride) float32, or
        (rows, d, V) for a token-only output of d x V values (logits, rates); a PyTorch tensor
        is read in place (detach it first). grad: True (a new array shaped like out), False /
        None (no gradient), or an array / tensor shaped like out to write the gradient into in
        place (float32, C-contiguous). Returns LossResult(loss: float, grad: the gradient (the
        caller's grad object when one was given) or None, values: float64 (rows, n_tokens +
        n_reals) for reduction "none", else None). part_t: optional (rows, n_parts) float64
        per-part times (dfm_loss_eval_parts)."""
        out, shape = _logits(out, None, self.n_tokens, self.n_reals, self.out_stride, "out")
        rows = out.shape[0]
        t = _times(t, rows)
        if part_t is not None:
            part_t = arr(part_t, F64, (rows, self.n_parts), "part_t")
        nt, nr = self.n_tokens, self.n_reals
        x1_tokens = arr(x1_tokens, I32, (rows, nt), "x1_tokens", optional=True)
        xt_tokens = arr(xt_tokens, I32, (rows, nt), "xt_tokens", optional=True)
        fixed = arr(fixed, U8, (rows, nt), "fixed", optional=True)
        x0_reals = arr(x0_reals, F32, (rows, nr), "x0_reals", optional=True)
        x1_reals = arr(x1_reals, F32, (rows, nr), "x1_reals", optional=True)
        xt_reals = arr(xt_reals, F32, (rows, nr), "xt_reals", optional=True)
        g, grad_obj = None, None
        if grad is True:
            g = np.empty_like(out)
            grad_obj = g.reshape(shape)
        elif grad is not None and grad is not False:
            grad_obj = grad
            g = out_arr(grad, F32, shape, "grad").reshape(out.shape)
        vals = None
        if self.reduction == C.REDUCE_NONE:
            vals = np.empty((rows, nt + nr), np.float64)
        loss = ctypes.c_double()
        a = _lib.dfm_loss_args()
        a.struct_size = ctypes.sizeof(a)
        a.rows = rows
        a.t = ptr(t)
        a.x1_tokens, a.xt_tokens, a.fixed = ptr(x1_tokens), ptr(xt_tokens), ptr(fixed)
        a.x0_reals, a.x1_reals, a.xt_reals = ptr(x0_reals), ptr(x1_reals), ptr(xt_reals)
        a.out, a.grad, a.values = ptr(out), ptr(g), ptr(vals)
        a.loss = ctypes.pointer(loss)
        if part_t is None:
            self._call("dfm_loss_eval", ctypes.byref(a))
        else:
            self._call("dfm_loss_eval_parts", ctypes.byref(a), ptr(part_t))
        return LossResult(loss.value, grad_obj, vals)

    def elbo(self, model, x1_tokens, n_t=8, *, fixed=None, chunk_rows=0, row_offset=0, draw=0,
             out_shape="2d"):
        """Negative ELBO per sequence (generalized-KL losses): returns (nelbo, std_error),
        float64 arrays of rows. model as for Sampler.run (posterior logits; out_shape too)."""
        x1_tokens = arr(x1_tokens, I32, (None, self.n_tokens), "x1_tokens")
        rows = x1_tokens.shape[0]
        fixed = arr(fixed, U8, (rows, self.n_tokens), "fixed", optional=True)
        cb = model_callback(model, out_shape_arg(out_shape))
        nelbo = np.empty(rows, np.float64)
        se = np.empty(rows, np.float64)
        a = _lib.dfm_elbo_args()
        a.struct_size = ctypes.sizeof(a)
        a.rows, a.row_offset = rows, check_size(row_offset, "row_offset")
        a.draw = uint_arg(draw, 32, "draw")
        a.x1_tokens, a.fixed = ptr(x1_tokens), ptr(fixed)
        a.n_t, a.chunk_rows = check_size(n_t, "n_t"), check_size(chunk_rows, "chunk_rows")
        a.model = cb.c
        a.nelbo, a.std_error = ptr(nelbo), ptr(se)
        self._call("dfm_loss_discrete_elbo", ctypes.byref(a), extra_cbs=[cb])
        return nelbo, se


# ---------------------------------------------------------------- Sampler

RunResult = collections.namedtuple("RunResult", "tokens reals saved_tokens saved_reals")
LogLikelihood = collections.namedtuple("LogLikelihood", "logp logp_var x0")

STATS = {"model_calls": C.STAT_MODEL_CALLS, "steps": C.STAT_STEPS, "rejected": C.STAT_REJECTED,
         "jumps": C.STAT_JUMPS, "clamped": C.STAT_CLAMPED, "model_rows": C.STAT_MODEL_ROWS}

StepView = collections.namedtuple("StepView", "step n_steps t tokens row_offset changed")
StepView.__doc__ = """What a step callback sees after each step: the step index, the step count,
the time reached, the sampler's tokens (a read-only (rows, n_tokens) int32 view, valid during
the call), row_offset, and the number of token changes the step made."""


class Sampler(_Options, Handle):
    """Simulates a generator over a time grid. Sampler(generator, method, steps=None,
    grid=None, **options) with options such as seed, threads, temperature, atol."""
    _free_name = "dfm_sampler_free"
    _err_name = "dfm_sampler_last_error"
    _cbs_name = "dfm_sampler_callback_status"
    _prefix = "sampler"

    def __init__(self, generator, method="euler", steps=None, grid=None, **options):
        _isa(generator, Generator, "generator")
        h = create("dfm_sampler_create", generator._ptr, _enum(method, METHODS, "method"), None,
                   callbacks=generator._cbs)
        super().__init__(h, generator._cbs)
        self.n_tokens, self.n_reals = generator.n_tokens, generator.n_reals
        self.out_stride = generator.out_stride
        self._corrector = None
        self._step_cb = None
        if steps is not None:
            self.set_steps(steps)
        if grid is not None:
            self.set_grid(grid)
        self.configure(**options)

    @property
    def method(self):
        return L.dfm_sampler_method(self._ptr)

    def set_steps(self, n_steps):
        """Uniform grid of n_steps steps on [0, 1]."""
        self._call("dfm_sampler_set_steps", check_size(n_steps, "n_steps"))

    def set_grid(self, grid):
        """Host time grid: float64 array of n >= 2 strictly monotone times in [0, 1]."""
        grid = arr(grid, F64, (None,), "grid")
        self._call("dfm_sampler_set_grid", ptr(grid), grid.shape[0])

    def set_corrector(self, fn):
        """Time-dependent corrector weight fn(t) -> float >= 0 (None: the constant option)."""
        if fn is None:
            self._call("dfm_sampler_set_corrector", _lib.corrector_fn(), None)
            self._cbs = [c for c in self._cbs if c is not self._corrector]
            self._corrector = None
            return
        cb = scalar_callback(fn, _lib.corrector_fn, "corrector")
        self._call("dfm_sampler_set_corrector", cb.c, None, extra_cbs=[cb])
        self._cbs = [c for c in self._cbs if c is not self._corrector] + [cb]
        self._corrector = cb

    def set_step_callback(self, fn):
        """fn(view) after every step of a discrete sampler's runs (a StepView); a truthy
        return stops the run (DfmError ESTOPPED), an exception stops it and is re-raised by
        run(). None removes the callback."""
        if fn is None:
            self._call("dfm_sampler_set_step_callback", _lib.step_fn(), None)
            self._cbs = [c for c in self._cbs if c is not self._step_cb]
            self._step_cb = None
            return
        if not callable(fn):
            raise TypeError("the step callback must be callable")

        def adapter(v_p, _ud):
            v = v_p.contents
            tok = view(v.tokens, (v.rows, v.n_tokens), I32, True)
            return 1 if fn(StepView(v.step, v.n_steps, v.t, tok, v.row_offset, v.changed)) else 0
        cb = Callback(_lib.step_fn, adapter, "step callback")
        self._call("dfm_sampler_set_step_callback", cb.c, None, extra_cbs=[cb])
        self._cbs = [c for c in self._cbs if c is not self._step_cb] + [cb]
        self._step_cb = cb

    def request_stop(self):
        """Ask a running sampler to stop after the current step (from its callbacks)."""
        L.dfm_sampler_request_stop(self._ptr)

    def stat(self, stat):
        v = ctypes.c_int64()
        sid = STATS[stat] if isinstance(stat, str) else int(stat)
        self._call("dfm_sampler_get_stat", sid, ctypes.byref(v))
        return v.value

    def stats(self):
        """Statistics of the last run as a dict (model_calls, steps, rejected, jumps, clamped)."""
        return {k: self.stat(v) for k, v in STATS.items()}

    def run(self, model, tokens=None, reals=None, *, rows=None, draw_source=None, fixed=None,
            save_times=None, progress=None, row_offset=0, out_shape="2d"):
        """Runs the sampler. model(t, tokens, reals, out[, info]) fills out (rows, out_stride),
        or (rows, d, V) with out_shape="3d" (token-only outputs), or returns an array of either
        shape. tokens (rows, n_tokens) int32 (or another integer dtype, range-checked) / reals
        (rows, n_reals) float32: the start states (not modified; the samples are returned), or
        give rows and the start is drawn from the source (draw_source defaults to True exactly
        when no start states are given).
        fixed: (rows, n_tokens) uint8/bool, nonzero = never changes. save_times: float64
        increasing times. progress(step, n_steps, t) -> truthy stops the run (DfmError
        ESTOPPED). Returns RunResult(tokens, reals, saved_tokens, saved_reals)."""
        nt, nr = self.n_tokens, self.n_reals
        out_shape_arg(out_shape)
        if draw_source is None:
            draw_source = tokens is None and reals is None
        tokens, rows_t = _rows(tokens, I32, nt, "tokens")
        reals, rows_r = _rows(reals, F32, nr, "reals")
        given = rows_t if rows_t is not None else rows_r
        if given is not None:
            if rows is not None and check_size(rows, "rows") != given:
                raise ValueError("rows = %d does not match the states' %d rows" % (rows, given))
            rows = given
        if rows is None:
            raise TypeError("give start states (tokens/reals) or rows")
        rows = check_size(rows, "rows")
        tokens = arr(tokens, I32, (rows, nt), "tokens", optional=True)
        reals = arr(reals, F32, (rows, nr), "reals", optional=True)
        if nt and tokens is None and not draw_source:
            raise ValueError("tokens are required unless draw_source is set")
        if nr and reals is None and not draw_source:
            raise ValueError("reals are required unless draw_source is set")
        fixed = arr(fixed, U8, (rows, nt), "fixed", optional=True)
        if save_times is not None:
            save_times = arr(save_times, F64, (None,), "save_times")
        n_save = 0 if save_times is None else save_times.shape[0]
        tok = (np.array(tokens, copy=True) if tokens is not None
               else np.zeros((rows, nt), np.int32)) if nt else None
        rl = (np.array(reals, copy=True) if reals is not None
              else np.zeros((rows, nr), np.float32)) if nr else None
        sv_t = np.empty((n_save, rows, nt), np.int32) if nt and n_save else None
        sv_r = np.empty((n_save, rows, nr), np.float32) if nr and n_save else None
        mcb = model_callback(model, out_shape)
        cbs = [mcb]
        a = _lib.dfm_run_args()
        a.struct_size = ctypes.sizeof(a)
        a.model = mcb.c
        a.rows, a.row_offset = rows, check_size(row_offset, "row_offset")
        a.tokens, a.reals = ptr(tok), ptr(rl)
        a.draw_source = 1 if draw_source else 0
        a.fixed = ptr(fixed)
        a.save_times, a.n_save = ptr(save_times), n_save
        a.saved_tokens, a.saved_reals = ptr(sv_t), ptr(sv_r)
        if progress is not None:
            pcb = progress_callback(progress)
            cbs.append(pcb)
            a.progress = pcb.c
        self._call("dfm_sampler_run", ctypes.byref(a), extra_cbs=cbs)
        return RunResult(tok, rl, sv_t, sv_r)

    def log_likelihood(self, model, x1, *, n_probes=1, divergence=None, log_p0=None,
                       fd_eps=0.0, row_offset=0, progress=None):
        """log q(x1) under the flow of a velocity generator (x1: (rows, D) float32).
        divergence(t, tokens, reals, div) fills div (rows,) float64 with the exact divergence
        (None: Hutchinson with n_probes probes). log_p0(x0, logp) fills logp (rows,) (None:
        standard normal). Returns LogLikelihood(logp, logp_var, x0)."""
        D = self.n_reals
        x1 = arr(x1, F32, (None, D), "x1")
        rows = x1.shape[0]
        cbs = [model_callback(model)]
        a = _lib.dfm_loglik_args()
        a.struct_size = ctypes.sizeof(a)
        a.model = cbs[0].c
        if divergence is not None:
            if not callable(divergence):
                raise TypeError("divergence must be callable")

            def div_adapter(io_p, div, _ud):
                io = io_p.contents
                t, tk, rl, _info = io_views(io)
                divergence(t, tk, rl, view(div, (io.rows,), F64, False))
                return 0
            cbs.append(Callback(_lib.divergence_fn, div_adapter, "divergence"))
            a.divergence = cbs[-1].c
        if log_p0 is not None:
            if not callable(log_p0):
                raise TypeError("log_p0 must be callable")

            def lp_adapter(x0, n, dim, logp, _ud):
                log_p0(view(x0, (n, dim), F32, True).copy(), view(logp, (n,), F64, False))
                return 0
            cbs.append(Callback(_lib.log_p0_fn, lp_adapter, "log_p0"))
            a.log_p0 = cbs[-1].c
        if progress is not None:
            cbs.append(progress_callback(progress))
            a.progress = cbs[-1].c
        a.rows, a.row_offset = rows, check_size(row_offset, "row_offset")
        a.x1 = ptr(x1)
        a.n_probes, a.fd_eps = check_size(n_probes, "n_probes"), float(fd_eps)
        logp = np.empty(rows, np.float64)
        var = np.empty(rows, np.float64)
        x0 = np.empty((rows, D), np.float32)
        a.logp, a.logp_var, a.x0_out = ptr(logp), ptr(var), ptr(x0)
        self._call("dfm_sampler_log_likelihood", ctypes.byref(a), extra_cbs=cbs)
        return LogLikelihood(logp, var, x0)
