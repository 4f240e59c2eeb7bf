"""Generator matching across processes (include/dfm/gm.h, docs/gm.md).

Product (multimodal) paths, generators and losses; superposition of generators, classifier-free
guidance and the backward mixture generator; the training step (Trainer) with Python forward and
backward callbacks; the general generator-matching loss for a Python conditional generator.

Importing dfm installs these entry points on the handle classes:

  Path.product(*parts), path.n_parts, path.part(k), path.sample_parts(part_t, ...)
  Generator.product(*parts), .superposition(gens, weights), .guidance(cond, uncond, w),
  .mixture_backward(path); generator.n_parts, set_part_time_fn(fn), set_weight_fn(fn),
  set_input(k, branch, share_with), branch_stride(branch)
  Loss.product(path, parts, weights), Loss.gm(space, kind, fn), loss.eval_parts(...)
  sampler.step_clamped()

and defines Trainer. Callbacks follow the package's rule: an exception never crosses into C;
libdfm fails the call (ECALLBACK) and the wrapper re-raises the original exception."""
import collections
import ctypes

import numpy as np

from . import _lib
from . import constants as C
from ._util import (F32, F64, I32, U8, Callback, Handle, _wants_info, arr, check_size, create,
                    io_views, model_callback, out_shape_arg, ptr, raise_error, shaped_view,
                    view)
from .handles import (OPTIONS, Generator, Loss, Path, Sampler, Space, _enum, _isa, _Options)

L = _lib.lib

BRANCHES = {"main": C.BRANCH_MAIN, "uncond": C.BRANCH_UNCOND}
GM_KINDS = {"velocity": C.GM_VELOCITY, "rates": C.GM_RATES}
TIME_KINDS = {"uniform": C.TIME_UNIFORM, "logit_normal": C.TIME_LOGIT_NORMAL,
              "stratified": C.TIME_STRATIFIED}

OPTIONS.update({
    "time_kind": (C.OPT_GM_TIME_KIND, "i"), "time_eps": (C.OPT_GM_TIME_EPS, "d"),
    "time_p1": (C.OPT_GM_TIME_P1, "d"), "time_p2": (C.OPT_GM_TIME_P2, "d"),
    "part_times": (C.OPT_GM_PART_TIMES, "i"),
})


def _handle_array(objs, cls, name):
    """(objs as a tuple, a c_void_p array of their handles, the union of their callbacks)."""
    if len(objs) == 1 and isinstance(objs[0], (list, tuple)):
        objs = tuple(objs[0])
    objs = tuple(objs)
    for i, o in enumerate(objs):
        _isa(o, cls, "%s[%d]" % (name, i))
    a = (ctypes.c_void_p * max(1, len(objs)))(*[o._ptr for o in objs])
    return objs, a, _union(*[o._cbs for o in objs])


def _union(*lists):
    out = []
    for lst in lists:
        out.extend(c for c in lst if not any(c is o for o in out))
    return out


def _weights(weights, n, name="weights"):
    """None, or n weights as a float64 array (from an array, tensor, list or tuple)."""
    if weights is None:
        return None
    return arr(weights, F64, (n,), name)


def _vector_callback(fn, cfunctype, name):
    """Wraps fn(t) -> n numbers as int f(double t, double *out, size_t n, void *): the result
    must have exactly n entries (ValueError otherwise, raised from the libdfm call)."""
    if not callable(fn):
        raise TypeError("%s must be callable" % name)

    def adapter(t, out, n, _ud):
        v = np.asarray(fn(t), dtype=np.float64).reshape(-1)
        if v.shape[0] != n:
            raise ValueError("%s must return %d values, got %d" % (name, n, v.shape[0]))
        view(out, (n,), F64, False)[:] = v
        return 0
    return Callback(cfunctype, adapter, name)


def _branch(b):
    return _enum(b, BRANCHES, "branch")


# ---------------------------------------------------------------- product paths

def _path_product(cls, *parts):
    """DFM_PATH_PRODUCT of part paths (copied), in order: part k's tokens after those of parts
    < k, its reals after theirs. Any path kind with a sampler (even another product)."""
    parts, a, cbs = _handle_array(parts, Path, "parts")
    h = create("dfm_path_create_product", a, len(parts), None, callbacks=cbs)
    return cls(h, cbs)


def _path_n_parts(self):
    """Number of parts (1 for a path that is not a product)."""
    return L.dfm_path_n_parts(self._ptr)


def _path_part(self, k):
    """A copy of part k (IndexError when out of range; part 0 of a non-product is the path)."""
    k = check_size(k, "k")
    p = L.dfm_path_part(self._ptr, k)
    if not p:
        raise IndexError("part %d of a path with %d parts" % (k, self.n_parts))
    return Path(create("dfm_path_clone", p, None), self._cbs)


def _path_sample_parts(self, part_t, x1_tokens=None, x1_reals=None, *, t=None, x0_tokens=None,
                       x0_reals=None, row_offset=0, draw=0):
    """path.sample with per-part times: part_t (rows, n_parts) float64, part k of row r at
    part_t[r, k]. t: the row times (a product path still needs them; default: part 0's
    times). Returns PathSample."""
    part_t = arr(part_t, F64, (None, self.n_parts), "part_t")
    if t is None:
        t = np.ascontiguousarray(part_t[:, 0])
    return self.sample(t, x1_tokens, x1_reals, x0_tokens=x0_tokens, x0_reals=x0_reals,
                       row_offset=row_offset, draw=draw, part_t=part_t)


Path.product = classmethod(_path_product)
Path.n_parts = property(_path_n_parts)
Path.part = _path_part
Path.sample_parts = _path_sample_parts


# ---------------------------------------------------------------- generators

def _gen_product(cls, *parts):
    """DFM_GEN_PRODUCT: one generator per part (copied): factorized mixture generators,
    velocity / diffusion generators on affine paths, superpositions of those. The model writes
    every part's output in its slice of out (parts in order), once per step for all parts."""
    parts, a, cbs = _handle_array(parts, Generator, "parts")
    h = create("dfm_generator_create_product", a, len(parts), None, callbacks=cbs)
    return cls(h, cbs)


def _gen_superposition(cls, gens, weights=None):
    """DFM_GEN_SUPERPOSITION sum_k w_k L_k of generators of one space (copied): all continuous
    or all discrete. weights: n finite numbers (float64 array or list; None: 1/n)."""
    gens, a, cbs = _handle_array((gens,) if isinstance(gens, Generator) else gens, Generator,
                                 "gens")
    w = _weights(weights, len(gens))
    h = create("dfm_generator_create_superposition", a, ptr(w), len(gens), None, callbacks=cbs)
    return cls(h, cbs)


def _gen_guidance(cls, cond, uncond=None, w=1.0):
    """Classifier-free guidance (1 + w) L_cond - w L_uncond: cond reads the model call with
    branch BRANCH_MAIN, uncond (None: a copy of cond) the BRANCH_UNCOND call."""
    _isa(cond, Generator, "cond")
    if uncond is not None:
        _isa(uncond, Generator, "uncond")
    cbs = _union(cond._cbs, uncond._cbs if uncond is not None else [])
    h = create("dfm_generator_create_guidance", cond._ptr,
               uncond._ptr if uncond is not None else None, float(w), None, callbacks=cbs)
    return cls(h, cbs)


def _gen_mixture_backward(cls, path):
    """The backward-time generator of a mixture path (no model output; only usable inside a
    superposition, e.g. (1 + c) forward - c backward = the corrector)."""
    _isa(path, Path, "path")
    h = create("dfm_generator_create_mixture_backward", path._ptr, None, callbacks=path._cbs)
    return cls(h, path._cbs)


def _gen_n_parts(self):
    """Number of parts of a product generator (1 for other kinds)."""
    return L.dfm_generator_n_parts(self._ptr)


def _replace_cb(self, key, cb):
    old = self._extra.pop(key, None)
    self._cbs = [c for c in self._cbs if c is not old] + ([cb] if cb is not None else [])
    if cb is not None:
        self._extra[key] = cb


def _gen_set_part_time_fn(self, fn):
    """Per-part sampling clocks of a product generator: fn(t) -> n_parts times tau_k(t) in
    [0, 1], nondecreasing in t (None: every part at t). The model sees them in info.part_t.
    Samplers and products created afterwards keep this function alive."""
    if fn is None:
        self._call("dfm_generator_set_part_time_fn", _lib.part_time_fn(), None)
        _replace_cb(self, "part_time", None)
        return
    cb = _vector_callback(fn, _lib.part_time_fn, "part time function")
    self._call("dfm_generator_set_part_time_fn", cb.c, None, extra_cbs=[cb])
    _replace_cb(self, "part_time", cb)


def _gen_set_weight_fn(self, fn):
    """Time-dependent weights of a superposition: fn(t) -> n finite weights (None: back to
    the constant weights)."""
    if fn is None:
        self._call("dfm_generator_set_weight_fn", _lib.weight_fn(), None)
        _replace_cb(self, "weights", None)
        return
    cb = _vector_callback(fn, _lib.weight_fn, "weight function")
    self._call("dfm_generator_set_weight_fn", cb.c, None, extra_cbs=[cb])
    _replace_cb(self, "weights", cb)


def _gen_set_input(self, k, branch="main", share_with=None):
    """Which model call feeds component k of a superposition: branch ("main"/"uncond" or
    BRANCH_*) and share_with (None / -1: its own slice, or an earlier component j < k whose
    slice it reads)."""
    sw = -1 if share_with is None else int(share_with)
    self._call("dfm_generator_superposition_set_input", check_size(k, "k"), _branch(branch), sw)


def _gen_branch_stride(self, branch):
    """Floats per row of the model call with that branch (0 when unused)."""
    return L.dfm_generator_branch_stride(self._ptr, _branch(branch))


Generator.product = classmethod(_gen_product)
Generator.superposition = classmethod(_gen_superposition)
Generator.guidance = classmethod(_gen_guidance)
Generator.mixture_backward = classmethod(_gen_mixture_backward)
Generator.n_parts = property(_gen_n_parts)
Generator.set_part_time_fn = _gen_set_part_time_fn
Generator.set_weight_fn = _gen_set_weight_fn
Generator.set_input = _gen_set_input
Generator.branch_stride = _gen_branch_stride


def _sampler_step_clamped(self):
    """Entries clamped at zero in the last completed step of a superposition / product sampler
    (call it from the progress callback for a per-step count)."""
    v = ctypes.c_int64()
    with self._lock:
        st = L.dfm_sampler_step_clamped(self._ptr, ctypes.byref(v))
    if st:
        raise_error(st, "dfm_sampler_step_clamped",
                    "not a superposition / product sampler" if st == C.EUNSUPPORTED else "")
    return v.value


Sampler.step_clamped = _sampler_step_clamped


# ---------------------------------------------------------------- losses

def _loss_product(cls, path, parts, weights=None):
    """DFM_LOSS_PRODUCT sum_k w_k L_k: part k's loss (copied) on part k's slices. path: the
    product path giving the layout (any path when there is one part). weights: None (all 1)
    or n finite numbers. out_stride is the sum of the parts' strides."""
    _isa(path, Path, "path")
    parts, a, cbs = _handle_array((parts,) if isinstance(parts, Loss) else parts, Loss, "parts")
    w = _weights(weights, len(parts))
    cbs = _union(path._cbs, cbs)
    h = create("dfm_loss_create_product", path._ptr, a, ptr(w), len(parts), None, callbacks=cbs)
    return cls(h, cbs, path.n_tokens, path.n_reals, sum(p.out_stride for p in parts),
               len(parts))


CondTarget = collections.namedtuple("CondTarget",
                                    "t xt_tokens x1_tokens xt_reals x1_reals x0_reals target")
CondTarget.__doc__ = """What a conditional-target function receives: t (rows,) float64,
tokens (rows, n_tokens) int32 and reals (rows, n_reals) float32 as writable copies (None when
absent), target (rows, target_stride) float32, libdfm's buffer, to fill during the call."""


def _loss_gm(cls, space, kind, fn):
    """General generator-matching loss for a Python conditional generator fn(io) with io a
    CondTarget: fill io.target (or return an array of its shape). kind "velocity" (Euclidean
    space; MSE; target = conditional velocity, out_stride = n_reals) or "rates" (discrete
    space; Bregman divergence; per-token rates, out_stride = sum of the vocabularies)."""
    _isa(space, Space, "space")
    k = _enum(kind, GM_KINDS, "kind")
    if not callable(fn):
        raise TypeError("fn must be callable")

    def adapter(io_p, _ud):
        io = io_p.contents
        rows, nt, nr = io.rows, io.n_tokens, io.n_reals

        def opt(p, n, dt):
            return view(p, (rows, n), dt, True).copy() if p else None
        target = view(io.target, (rows, io.target_stride), F32, False)
        r = fn(CondTarget(view(io.t, (rows,), F64, True).copy(), opt(io.xt_tokens, nt, I32),
                          opt(io.x1_tokens, nt, I32), opt(io.xt_reals, nr, F32),
                          opt(io.x1_reals, nr, F32), opt(io.x0_reals, nr, F32), target))
        if r is not None:
            target[...] = r
        return 0
    cb = Callback(_lib.cond_target_fn, adapter, "conditional target")
    h = create("dfm_loss_create_gm", space._ptr, k, cb.c, None, None, callbacks=[cb])
    nt, nr = space.n_tokens, space.n_reals
    stride = nr if k == C.GM_VELOCITY else sum(space.token_vocab(j) for j in range(nt))
    return cls(h, [cb], nt, nr, stride)


def _loss_eval_parts(self, out, t, part_t, **kw):
    """Loss.eval with per-part times part_t (rows, n_parts) float64 (dfm_loss_eval_parts);
    None: every part at t."""
    return self.eval(out, t, part_t=part_t, **kw)


Loss.product = classmethod(_loss_product)
Loss.gm = classmethod(_loss_gm)
Loss.eval_parts = _loss_eval_parts


# ---------------------------------------------------------------- the trainer

TrainStep = collections.namedtuple("TrainStep", "loss t")
TrainDraw = collections.namedtuple("TrainDraw", "t part_t xt_tokens xt_reals x0_reals")


def backward_callback(backward, out_shape="2d"):
    """Wraps backward(t, tokens, reals, out, grad[, info]) as a dfm_backward_fn: the forward
    call's inputs and output and dLoss/dout (rows, out_stride) float32 (or (rows, d, V) with
    out_shape="3d"), all writable copies (torch.from_numpy(grad) takes them as they are)."""
    if not callable(backward):
        raise TypeError("backward must be callable")
    with_info = _wants_info(backward, 5)

    def adapter(io_p, grad_p, _ud):
        io = io_p.contents
        t, tokens, reals, info = io_views(io)
        out = shaped_view(view(io.out, (io.rows, io.out_stride), F32, True).copy(), io,
                          out_shape, "backward")
        grad = shaped_view(view(grad_p, (io.rows, io.out_stride), F32, True).copy(), io,
                           out_shape, "backward")
        if with_info:
            backward(t, tokens, reals, out, grad, info)
        else:
            backward(t, tokens, reals, out, grad)
        return 0
    return Callback(_lib.backward_fn, adapter, "backward")


class Trainer(_Options, Handle):
    """The training step of generator matching: Trainer(path, loss, **options) (both copied),
    options seed, threads, reduction, time_kind ("uniform", "logit_normal", "stratified"),
    time_eps, time_p1, time_p2, part_times."""
    _free_name = "dfm_trainer_free"
    _err_name = "dfm_trainer_last_error"
    _cbs_name = "dfm_trainer_callback_status"
    _prefix = "trainer"

    def __init__(self, path, loss, **options):
        _isa(path, Path, "path")
        _isa(loss, Loss, "loss")
        cbs = _union(path._cbs, loss._cbs)
        h = create("dfm_trainer_create", path._ptr, loss._ptr, None, callbacks=cbs)
        super().__init__(h, cbs)
        self.n_tokens, self.n_reals = path.n_tokens, path.n_reals
        self.n_parts = path.n_parts
        self.out_stride = loss.out_stride
        self.configure(**options)

    def set_option(self, name, value):
        if name == "time_kind":
            value = _enum(value, TIME_KINDS, "time kind")
        elif name == "part_times":
            value = int(bool(value))
        super().set_option(name, value)

    @property
    def step_count(self):
        """Successful steps so far (the draw index of the next step); assignable."""
        with self._lock:
            return L.dfm_trainer_step_count(self._ptr)

    @step_count.setter
    def step_count(self, s):
        self.set_step(s)

    def set_step(self, s):
        """Sets the step counter (resume, or redo a step with the same draws)."""
        self._call("dfm_trainer_set_step", check_size(s, "step"))

    @property
    def n_times(self):
        """Time values per row (n_parts with part_times, else 1)."""
        with self._lock:
            return L.dfm_trainer_n_times(self._ptr)

    def _data(self, x1_tokens, x1_reals, x0_tokens, x0_reals):
        nt, nr = self.n_tokens, self.n_reals
        if nt == 0 and (x1_tokens is not None or x0_tokens is not None):
            raise ValueError("the trainer's space has no tokens")
        if nr == 0 and (x1_reals is not None or x0_reals is not None):
            raise ValueError("the trainer's space has no reals")
        if nt:
            x1_tokens = arr(x1_tokens, I32, (None, nt), "x1_tokens")
            rows = x1_tokens.shape[0]
        else:
            x1_reals = arr(x1_reals, F32, (None, nr), "x1_reals")
            rows = x1_reals.shape[0]
        x1_tokens = arr(x1_tokens, I32, (rows, nt), "x1_tokens", optional=nt == 0)
        x1_reals = arr(x1_reals, F32, (rows, nr), "x1_reals", optional=nr == 0)
        x0_tokens = arr(x0_tokens, I32, (rows, nt), "x0_tokens", optional=True)
        x0_reals = arr(x0_reals, F32, (rows, nr), "x0_reals", optional=True)
        return rows, x1_tokens, x1_reals, x0_tokens, x0_reals

    def step(self, forward, backward=None, x1_tokens=None, x1_reals=None, *, x0_tokens=None,
             x0_reals=None, fixed=None, row_offset=0, out_shape="2d"):
        """One training step on a batch of data x1 ((rows, n_tokens) int32 / (rows, n_reals)
        float32): draws t and x_t, calls forward(t, tokens, reals, out[, info]) (as a sampler
        model; info.part_t holds the per-part times), evaluates the loss and its gradient,
        calls backward(t, tokens, reals, out, grad[, info]) (None: evaluation only), and
        advances the step counter. Returns TrainStep(loss, t): t (rows, n_times) float64.
        out_shape="3d": forward fills and backward receives (rows, d, V) arrays."""
        rows, x1_tokens, x1_reals, x0_tokens, x0_reals = self._data(x1_tokens, x1_reals,
                                                                    x0_tokens, x0_reals)
        if fixed is not None and isinstance(fixed, np.ndarray) and fixed.dtype == np.bool_:
            fixed = fixed.view(np.uint8)
        fixed = arr(fixed, U8, (rows, self.n_tokens), "fixed", optional=True)
        fcb = model_callback(forward, out_shape_arg(out_shape))
        cbs = [fcb]
        a = _lib.dfm_train_args()
        a.struct_size = ctypes.sizeof(a)
        a.rows, a.row_offset = rows, check_size(row_offset, "row_offset")
        a.x1_tokens, a.x1_reals = ptr(x1_tokens), ptr(x1_reals)
        a.x0_tokens, a.x0_reals, a.fixed = ptr(x0_tokens), ptr(x0_reals), ptr(fixed)
        a.forward = fcb.c
        if backward is not None:
            bcb = backward_callback(backward, out_shape)
            cbs.append(bcb)
            a.backward = bcb.c
        loss = ctypes.c_double()
        t_out = np.empty((rows, self.n_times), np.float64)
        a.loss = ctypes.pointer(loss)
        a.t_out = ptr(t_out)
        self._call("dfm_trainer_step", ctypes.byref(a), extra_cbs=cbs)
        return TrainStep(loss.value, t_out)

    def draw(self, x1_tokens=None, x1_reals=None, *, x0_tokens=None, x0_reals=None,
             row_offset=0):
        """The draws of the next step without taking it (the counter does not move):
        TrainDraw(t (rows,), part_t (rows, n_times), xt_tokens, xt_reals, x0_reals)."""
        rows, x1_tokens, x1_reals, x0_tokens, x0_reals = self._data(x1_tokens, x1_reals,
                                                                    x0_tokens, x0_reals)
        nt, nr = self.n_tokens, self.n_reals
        t = np.empty(rows, np.float64)
        pt = np.empty((rows, self.n_times), np.float64)
        xt_t = np.empty((rows, nt), np.int32) if nt else None
        xt_r = np.empty((rows, nr), np.float32) if nr else None
        x0o = np.empty((rows, nr), np.float32) if nr else None
        a = _lib.dfm_train_draw_args()
        a.struct_size = ctypes.sizeof(a)
        a.rows, a.row_offset = rows, check_size(row_offset, "row_offset")
        a.x1_tokens, a.x1_reals = ptr(x1_tokens), ptr(x1_reals)
        a.x0_tokens, a.x0_reals = ptr(x0_tokens), ptr(x0_reals)
        a.t, a.part_t = ptr(t), ptr(pt)
        a.xt_tokens, a.xt_reals, a.x0_reals_out = ptr(xt_t), ptr(xt_r), ptr(x0o)
        self._call("dfm_trainer_draw", ctypes.byref(a))
        return TrainDraw(t, pt, xt_t, xt_r, x0o)
