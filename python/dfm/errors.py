"""DfmError: libdfm's status codes as a Python exception."""
from . import _lib
from . import constants as C

_NAMES = {getattr(C, n): n for n in ("OK", "EINVAL", "ENOMEM", "EOVERFLOW", "ECALLBACK", "ENUMERIC",
                                     "ERANGE", "EUNSUPPORTED", "ESTOPPED", "ESTATE", "ELIMIT")}


def last_error():
    """The message of the last libdfm call that failed on this thread (dfm_last_error)."""
    return _lib.lib.dfm_last_error().decode("utf-8", "replace")


def strerror(status):
    """libdfm's static description of a status code ("unknown status code" for others)."""
    return _lib.lib.dfm_strerror(int(status)).decode("utf-8", "replace")


class DfmError(Exception):
    """A libdfm call failed.

    Attributes: status (the DFM_E* code, e.g. dfm.EINVAL), name ("EINVAL"), message (the
    handle's dfm_*_last_error text, or dfm_last_error() when the call has no handle: the reason
    a creation failed),
    function (the C function that failed), callback_status (the raw value a failing host
    callback returned, when known)."""

    def __init__(self, status, message="", function=None, callback_status=0):
        self.status = int(status)
        self.name = _NAMES.get(self.status, "E%d" % self.status)
        self.message = message or strerror(self.status)
        self.function = function
        self.callback_status = callback_status
        where = "%s: " % function if function else ""
        super().__init__("%s%s (%s)" % (where, self.message, self.name))

    def __reduce__(self):
        return (type(self), (self.status, self.message, self.function, self.callback_status))
