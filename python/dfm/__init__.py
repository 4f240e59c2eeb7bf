"""libdfm for Python: generator matching / discrete flow matching over libdfm's C ABI.

ctypes bindings with numpy buffers. Every libdfm failure raises DfmError (.status, .message);
an exception raised by a Python callback (model, progress, scheduler ...) never crosses into C:
it is caught, libdfm fails the call with ECALLBACK (or ESTOPPED for progress), and the original
exception is re-raised from that DfmError. See docs/python.md."""
import sys as _sys

try:
    import numpy as _np  # noqa: F401
except ImportError as _e:
    raise ImportError(
        "the dfm package needs numpy, which %s (Python %d.%d) cannot import: use an interpreter "
        "that has it (Debian: /usr/bin/python3 with python3-numpy, the one the Makefile uses) "
        "or install numpy into this one (docs/python.md, Install)"
        % (_sys.executable, _sys.version_info[0], _sys.version_info[1])) from _e

from . import _lib
from ._version import __version__
from .constants import *  # noqa: F401,F403 -- OK, EINVAL, ..., METHOD_EXACT, PARAM_LOGITS ...
from .errors import DfmError, last_error, strerror
from .handles import (Generator, Loss, LossResult, Path, PathSample, RunResult, Sampler,
                      SchedValues, Scheduler, Space, SpacePart)
from ._util import ModelInfo
from . import rng, ctmc, gm
from .gm import CondTarget, Trainer, TrainDraw, TrainStep
from .rng import time_sample
from .ctmc import Ctmc

library_path = _lib.path      # the libdfm file loaded
library_origin = _lib.origin  # which search step found it (docs/python.md)


def version():
    """Version string of the libdfm actually loaded, e.g. "0.2.0" (dfm.__version__ is the
    version the package was written for; their major.minor are equal, checked at import)."""
    return _lib.lib.dfm_version_string().decode()


def version_number():
    """major * 10000 + minor * 100 + patch of the loaded libdfm."""
    return _lib.lib.dfm_version_number()


def status_count():
    return _lib.lib.dfm_status_count()


def max_threads():
    return _lib.lib.dfm_max_threads()

