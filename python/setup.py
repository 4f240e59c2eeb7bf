"""Build hook of the dfm package (metadata: pyproject.toml). At build time it adds to the package
either a copy of libdfm (bundled) or the libdir of an installed libdfm (recorded):

  DFM_INSTALL_LIBDIR=dir   record dir in dfm/_install.py and bundle nothing (make install-python)
  DFM_BUNDLE=path          bundle this shared object (default: ../lib/libdfm.so.0, the library
                           `make` builds in the source tree, when it exists)
  DFM_BUNDLE=no            bundle nothing; the package searches at import (docs/python.md)

A bundled library makes the wheel platform-specific (it holds machine code)."""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
SONAME = "libdfm.so.0"


def _plan():
    """("record", libdir) or ("bundle", path) or (None, None), from the environment."""
    libdir = os.environ.get("DFM_INSTALL_LIBDIR", "")
    bundle = os.environ.get("DFM_BUNDLE", "")
    if libdir:
        if bundle and bundle.lower() not in ("no", "0"):
            raise SystemExit("setup.py: DFM_INSTALL_LIBDIR and DFM_BUNDLE exclude each other")
        return "record", os.path.abspath(libdir)
    if bundle.lower() in ("no", "0"):
        return None, None
    if bundle:
        if not os.path.isfile(bundle):
            raise SystemExit("setup.py: DFM_BUNDLE=%s is not a file" % bundle)
        return "bundle", os.path.abspath(bundle)
    default = os.path.join(HERE, "..", "lib", SONAME)
    return ("bundle", os.path.realpath(default)) if os.path.isfile(default) else (None, None)


PLAN = _plan()


class BuildPy(build_py):
    """build_py that also writes dfm/_libs/libdfm.so.0 or dfm/_install.py into the build tree,
    and removes what an earlier build of another plan left there."""

    def run(self):
        super().run()
        pkg = os.path.join(self.build_lib, "dfm")
        libs = os.path.join(pkg, "_libs")
        shutil.rmtree(libs, ignore_errors=True)
        rec = os.path.join(pkg, "_install.py")
        if os.path.exists(rec):
            os.remove(rec)
        kind, value = PLAN
        if kind == "bundle":
            os.makedirs(libs)
            shutil.copyfile(value, os.path.join(libs, SONAME))
            os.chmod(os.path.join(libs, SONAME), 0o755)
        elif kind == "record":
            with open(rec, "w") as fh:
                fh.write('"""Written by setup.py (make install-python): the libdir of the '
                         'installed libdfm."""\nLIBDIR = %r\n' % value)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return PLAN[0] == "bundle"


setup(cmdclass={"build_py": BuildPy}, distclass=BinaryDistribution)
