"""The libdfm version this package's ctypes mirrors were written for (include/dfm/common.h:
DFM_VERSION_STRING); pyproject.toml reads __version__ from here. A test checks both against the
header."""
__version__ = "0.2.0"
MIRROR_VERSION = (0, 2, 0)
