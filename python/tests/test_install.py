"""Packaging: the version the package mirrors, the library search order, the import-time version
check (tests/python_install.sh installs the package for real)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from _common import dfm

from dfm import _lib

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CC = os.environ.get("CC") or shutil.which("cc")


def header_version():
    with open(os.path.join(ROOT, "include", "dfm", "common.h")) as f:
        return re.search(r'#define DFM_VERSION_STRING "([^"]+)"', f.read()).group(1)


class TestPackageVersion(unittest.TestCase):
    def test_mirror_version_is_the_headers(self):
        want = header_version()
        self.assertEqual(dfm.__version__, want)
        self.assertEqual(".".join(map(str, _lib.MIRROR_VERSION)), want)
        with open(os.path.join(ROOT, "python", "pyproject.toml")) as f:
            self.assertIn('version = {attr = "dfm._version.__version__"}', f.read())


class TestSearchOrder(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.pkg = os.path.join(self.tmp, "site", "dfm")
        os.makedirs(self.pkg)
        self.pc_calls = 0

    def pkg_config(self):
        self.pc_calls += 1
        return "/pc/lib"

    def order(self, env):
        return list(_lib.candidates(env, self.pkg, self.pkg_config))

    def test_order(self):
        so = _lib.SONAME
        self.assertEqual(self.order({}), [
            ("bundled", os.path.join(self.pkg, "_libs", so)),
            ("pkg-config", "/pc/lib/" + so), ("system loader", so)])
        with open(os.path.join(self.pkg, "_install.py"), "w") as f:
            f.write("LIBDIR = '/opt/dfm/lib'\n")
        self.assertEqual(self.order({"DFM_LIBDIR": "/x"})[:3], [
            ("DFM_LIBDIR", "/x/" + so), ("bundled", os.path.join(self.pkg, "_libs", so)),
            ("install-python", "/opt/dfm/lib/" + so)])
        self.pc_calls = 0
        self.assertEqual(self.order({"DFM_LIBRARY": "/a/b.so", "DFM_LIBDIR": "/x"}),
                         [("DFM_LIBRARY", "/a/b.so")])          # nothing else is tried
        self.assertEqual(self.pc_calls, 0)

    def test_source_tree(self):
        """python/dfm inside a tree with include/dfm/common.h: lib/ of that tree, before
        pkg-config."""
        pkg = os.path.join(ROOT, "python", "dfm")
        got = list(_lib.candidates({}, pkg, self.pkg_config))
        self.assertEqual([o for o, _ in got], ["bundled", "source tree", "pkg-config",
                                              "system loader"])
        self.assertEqual(got[1][1], os.path.join(ROOT, "lib", _lib.SONAME))

    def test_not_found_lists_every_place(self):
        """A copy of the package outside any tree, with no library anywhere, in a fresh
        interpreter (this one has libdfm.so.0 loaded, which the system loader would reuse)."""
        shutil.copytree(os.path.join(ROOT, "python", "dfm"), os.path.join(self.tmp, "p", "dfm"),
                        ignore=shutil.ignore_patterns("__pycache__", "_libs", "_install.py"))
        env = dict(os.environ, PYTHONPATH=os.path.join(self.tmp, "p"), LD_LIBRARY_PATH="",
                   DFM_LIBDIR=os.path.join(self.tmp, "nowhere"),
                   PKG_CONFIG_LIBDIR=os.path.join(self.tmp, "nowhere"))
        env.pop("DFM_LIBRARY", None)
        r = subprocess.run([sys.executable, "-c", "import dfm"], env=env, cwd=self.tmp,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        msg = r.stderr.decode()
        if r.returncode == 0:
            self.skipTest("a libdfm is installed where the system loader finds it")
        self.assertIn("ImportError: libdfm shared library not found (build it with `make`, "
                      "install it with `make install`, or set DFM_LIBRARY to its path)", msg)
        self.assertIn(os.path.join(self.tmp, "nowhere", _lib.SONAME) + " (DFM_LIBDIR): not "
                      "found", msg)
        self.assertIn("(bundled): not found", msg)
        self.assertIn("libdfm.so.0 (system loader): libdfm.so.0: cannot open", msg)
        self.assertNotIn("(source tree)", msg)
        self.assertNotIn("(pkg-config)", msg)

    def test_first_existing_library_is_used(self):
        env = {"DFM_LIBDIR": os.path.join(self.tmp, "nowhere")}
        os.makedirs(os.path.join(self.pkg, "_libs"))
        shutil.copyfile(dfm.library_path, os.path.join(self.pkg, "_libs", _lib.SONAME))
        lib, path, origin = _lib.load(env, self.pkg, self.pkg_config)
        self.assertEqual((origin, path), ("bundled", os.path.join(self.pkg, "_libs",
                                                                  _lib.SONAME)))
        self.assertEqual(self.pc_calls, 0)                        # not reached


@unittest.skipIf(not CC, "no C compiler to build stand-in libraries")
class TestVersionCheck(unittest.TestCase):
    def build(self, source):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        with open(os.path.join(d, "f.c"), "w") as f:
            f.write(source)
        so = os.path.join(d, "libf.so")
        subprocess.check_call([CC, "-shared", "-fPIC", "-o", so, os.path.join(d, "f.c")])
        return so

    def import_with(self, so):
        """`import dfm` in a fresh interpreter with DFM_LIBRARY=so: (exit status, stderr)."""
        env = dict(os.environ, DFM_LIBRARY=so,
                   PYTHONPATH=os.path.join(ROOT, "python"))
        r = subprocess.run([sys.executable, "-c", "import dfm"], env=env, cwd=tempfile.gettempdir(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return r.returncode, r.stderr.decode()

    def test_other_minor_or_major_is_refused(self):
        maj, mnr, pat = _lib.MIRROR_VERSION
        for number, shown in ((maj * 10000 + (mnr + 1) * 100, "%d.%d.0" % (maj, mnr + 1)),
                              ((maj + 1) * 10000 + mnr * 100, "%d.%d.0" % (maj + 1, mnr))):
            so = self.build("unsigned dfm_version_number(void) { return %du; }\n" % number)
            rc, err = self.import_with(so)
            self.assertNotEqual(rc, 0)
            self.assertIn("ImportError: libdfm %s at %s does not match this dfm package, "
                          "written for libdfm %d.%d" % (shown, so, maj, mnr), err)

    def test_not_libdfm(self):
        rc, err = self.import_with(self.build("int f(void) { return 0; }\n"))
        self.assertNotEqual(rc, 0)
        self.assertIn("is not libdfm (it has no dfm_version_number)", err)

    def test_newer_patch_accepted_missing_functions_named(self):
        maj, mnr, pat = _lib.MIRROR_VERSION
        so = self.build("unsigned dfm_version_number(void) { return %du; }\n"
                        % (maj * 10000 + mnr * 100 + pat + 7))
        rc, err = self.import_with(so)         # the version passes; the prototypes do not
        self.assertNotEqual(rc, 0)
        self.assertIn("ImportError: libdfm at %s lacks dfm_version_string" % so, err)
        self.assertIn("built from older sources than this package", err)


if __name__ == "__main__":
    unittest.main()
