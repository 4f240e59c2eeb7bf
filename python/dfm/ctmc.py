"""Finite state spaces: flattening, Kolmogorov propagation, kinetic-optimal rates, Bregman."""
import ctypes

import numpy as np

from . import _lib
from ._util import (F64, I32, Callback, Handle, arr, check_size, create, ptr, raise_error,
                    view)
from . import _states
from .handles import Space, _isa

L = _lib.lib


def max_states():
    return L.dfm_ctmc_max_states()


def n_states(space):
    """S = V^d of a single-part discrete space."""
    _isa(space, Space, "space")
    return _states.n_states(space._ptr)


def flatten(space, tokens):
    """(rows, d) int32 tokens -> (rows,) int32 states (coordinate 0 most significant)."""
    _isa(space, Space, "space")
    tokens = arr(tokens, I32, (None, space.n_tokens), "tokens")
    out = np.empty(tokens.shape[0], np.int32)
    st = L.dfm_ctmc_flatten(space._ptr, ptr(tokens), tokens.shape[0], ptr(out))
    if st:
        raise_error(st, "dfm_ctmc_flatten")
    return out


def unflatten(space, states):
    """(rows,) int32 states -> (rows, d) int32 tokens."""
    _isa(space, Space, "space")
    states = arr(states, I32, (None,), "states")
    out = np.empty((states.shape[0], space.n_tokens), np.int32)
    st = L.dfm_ctmc_unflatten(space._ptr, ptr(states), states.shape[0], ptr(out))
    if st:
        raise_error(st, "dfm_ctmc_unflatten")
    return out


def kinetic_rates(p, dp):
    """Kinetic-optimal generator (n, n) of a path with probabilities p and derivative dp."""
    p = arr(p, F64, (None,), "p")
    n = p.shape[0]
    dp = arr(dp, F64, (n,), "dp")
    Q = np.empty((n, n), np.float64)
    st = L.dfm_ctmc_kinetic_rates(ptr(p), ptr(dp), n, ptr(Q))
    if st:
        raise_error(st, "dfm_ctmc_kinetic_rates")
    return Q


def bregman_rates(a, b):
    """(D(a, b), gradient wrt b) of D(a, b) = sum a log(a/b) - a + b."""
    a = arr(a, F64, (None,), "a")
    b = arr(b, F64, (a.shape[0],), "b")
    v = ctypes.c_double()
    g = np.empty_like(b)
    st = L.dfm_bregman_rates(ptr(a), ptr(b), a.shape[0], ctypes.byref(v), ptr(g))
    if st:
        raise_error(st, "dfm_bregman_rates")
    return v.value, g


class Ctmc(Handle):
    """A Kolmogorov-propagation workspace for n states."""
    _free_name = "dfm_ctmc_free"
    _err_name = "dfm_ctmc_last_error"
    _cbs_name = "dfm_ctmc_callback_status"

    def __init__(self, n):
        super().__init__(create("dfm_ctmc_create", check_size(n, "n"), None))
        self.n = int(n)

    def _mat(self, A, name):
        return arr(A, F64, (self.n, self.n), name)

    def expm(self, A, h=1.0):
        """exp(h A) for any real n x n matrix."""
        A = self._mat(A, "A")
        E = np.empty_like(A)
        self._call("dfm_ctmc_expm", ptr(A), float(h), ptr(E))
        return E

    def kernel(self, Q, h):
        """exp(h Q) for a generator Q (diagonal derived), row-stochastic."""
        Q = self._mat(Q, "Q")
        K = np.empty_like(Q)
        self._call("dfm_ctmc_kernel", ptr(Q), float(h), ptr(K))
        return K

    def propagate(self, p0, Q, h):
        """p0 exp(h Q) for (m, n) row vectors p0."""
        p0 = arr(p0, F64, (None, self.n), "p0")
        Q = self._mat(Q, "Q")
        out = np.empty_like(p0)
        self._call("dfm_ctmc_propagate", ptr(p0), p0.shape[0], ptr(Q), float(h), ptr(out))
        return out

    def propagate_ode(self, p0, fn, t0, t1, n_steps):
        """p(t1) for dp/dt = p Q(t) by RK4; fn(t, Q) fills the (n, n) float64 view Q."""
        p0 = arr(p0, F64, (None, self.n), "p0")
        if not callable(fn):
            raise TypeError("fn must be callable")

        def adapter(t, Q, n, _ud):
            fn(t, view(Q, (n, n), F64, False))
            return 0
        cb = Callback(_lib.rate_matrix_fn, adapter, "rate matrix")
        out = np.empty_like(p0)
        self._call("dfm_ctmc_propagate_ode", ptr(p0), p0.shape[0], cb.c, None, float(t0),
                   float(t1), check_size(n_steps, "n_steps"), ptr(out), extra_cbs=[cb])
        return out
