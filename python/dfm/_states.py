"""The number of states of a finite space: the one piece Path (handles.py) and the ctmc module
both need, kept here so that neither imports the other."""
import ctypes

from . import _lib
from ._util import raise_error


def n_states(space_ptr):
    """S = V^d of the single-part discrete space behind a raw dfm_space pointer."""
    n = ctypes.c_size_t()
    st = _lib.lib.dfm_ctmc_n_states(space_ptr, ctypes.byref(n))
    if st:
        raise_error(st, "dfm_ctmc_n_states")
    return n.value
