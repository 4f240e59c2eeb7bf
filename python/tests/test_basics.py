"""Version, status codes, rng helpers, spaces, schedulers, struct layouts."""
import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from _common import np, dfm

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


class TestVersion(unittest.TestCase):
    def test_version_matches_header(self):
        with open(os.path.join(ROOT, "include", "dfm", "common.h")) as f:
            hdr = f.read()
        want = re.search(r'#define DFM_VERSION_STRING "([^"]+)"', hdr).group(1)
        self.assertEqual(dfm.version(), want)
        maj, mnr, pat = (int(x) for x in want.split("."))
        self.assertEqual(dfm.version_number(), maj * 10000 + mnr * 100 + pat)
        self.assertEqual(dfm.__version__, want)

    def test_constants_match_headers(self):
        # every integer #define DFM_* of the public headers, with its value (versions aside)
        want = {}
        hdir = os.path.join(ROOT, "include", "dfm")
        for name in sorted(os.listdir(hdir)):
            if not name.endswith(".h"):
                continue
            with open(os.path.join(hdir, name)) as f:
                for m in re.finditer(r"^#define DFM_(\w+)\s+\(?(-?(?:0x[0-9a-fA-F]+|\d+))\)?", f.read(), re.M):
                    if not m.group(1).startswith("VERSION_"):
                        want[m.group(1)] = int(m.group(2), 0)
        from dfm import constants
        for k, v in want.items():
            self.assertTrue(hasattr(constants, k), "dfm.constants lacks %s" % k)
            self.assertEqual(getattr(constants, k), v, k)

    def test_strerror(self):
        n = dfm.status_count()
        self.assertEqual(n, dfm.STATUS_COUNT)
        msgs = [dfm.strerror(i) for i in range(n)]
        self.assertEqual(len(set(msgs)), n)
        self.assertTrue(all(msgs))
        self.assertEqual(dfm.strerror(9999), "unknown status code")
        e = dfm.DfmError(dfm.ENUMERIC)
        self.assertEqual(e.status, dfm.ENUMERIC)
        self.assertEqual(e.name, "ENUMERIC")
        self.assertEqual(e.message, dfm.strerror(dfm.ENUMERIC))
        self.assertEqual(dfm.max_threads(), dfm.MAX_THREADS)


class TestLayout(unittest.TestCase):
    """The ctypes mirrors of the descriptor structs have the C sizes and field offsets."""

    def test_struct_layout_against_the_c_compiler(self):
        cc = os.environ.get("CC", "cc")
        if not shutil.which(cc):
            self.skipTest("no C compiler")
        from dfm import _lib
        names = ["dfm_model_io", "dfm_space_part", "dfm_sched_values", "dfm_path_sample_args",
                 "dfm_loss_args", "dfm_run_args", "dfm_elbo_args", "dfm_loglik_args",
                 "dfm_allocator", "dfm_step_view"]
        lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "dfm/dfm.h"',
                 'int main(void) {']
        want = []
        for n in names:
            st = getattr(_lib, n)
            lines.append('printf("%%zu\\n", sizeof(%s));' % n)
            want.append(ctypes.sizeof(st))
            for f, _ in st._fields_:
                lines.append('printf("%%zu\\n", offsetof(%s, %s));' % (n, f))
                want.append(getattr(st, f).offset)
        lines.append("return 0; }")
        with tempfile.TemporaryDirectory() as d:
            src, exe = os.path.join(d, "l.c"), os.path.join(d, "l")
            with open(src, "w") as f:
                f.write("\n".join(lines))
            subprocess.check_call([cc, "-std=c99", "-I" + os.path.join(ROOT, "include"), src,
                                   "-o", exe])
            got = [int(x) for x in subprocess.check_output([exe]).split()]
        self.assertEqual(got, want)


class TestRng(unittest.TestCase):
    def test_scalars_and_fill_agree(self):
        u = dfm.rng.uniform(7, 3, 10, 2, 5)
        self.assertTrue(0.0 <= u < 1.0)
        self.assertEqual(u, dfm.rng.uniform(7, 3, 10, 2, 5))
        self.assertNotEqual(u, dfm.rng.uniform(8, 3, 10, 2, 5))
        a = dfm.rng.fill(4, 3, seed=7, kind="normal", stream=3, row_offset=8, step=5)
        self.assertEqual(a.dtype, np.float32)
        self.assertEqual(a[2, 2], np.float32(dfm.rng.normal(7, 3, 10, 2, 5)))
        b = dfm.rng.fill(4, 3, seed=7, kind="normal", stream=3, row_offset=8, step=5, threads=2)
        self.assertTrue(np.array_equal(a, b))
        self.assertEqual(dfm.rng.block(1).dtype, np.uint32)
        self.assertEqual(len(dfm.rng.block(1, 2, 3, 4, 5)), 4)

    def test_uniform_fill_distribution(self):
        a = dfm.rng.fill(200, 100, seed=1)
        self.assertTrue(np.all((a >= 0) & (a < 1)))
        self.assertLess(abs(a.mean() - 0.5), 4 * (1 / 12 / a.size) ** 0.5)

    def test_categorical(self):
        logits = np.log(np.array([0.2, 0.5, 0.3], np.float32))
        draws = np.array([dfm.rng.categorical(logits, 5, 0, r) for r in range(3000)])
        counts = np.bincount(draws, minlength=3)
        from _common import chi2, chi2_bound
        st, k = chi2(counts, [0.2, 0.5, 0.3])
        self.assertLess(st, chi2_bound(k))
        self.assertEqual(dfm.rng.categorical(logits, 5, temperature=0.0), 1)
        w = np.array([0.0, 0.0, 2.0])
        self.assertEqual(dfm.rng.categorical_weights(w, 3), 2)
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.rng.categorical(np.array([np.nan, 0], np.float32), 1)
        self.assertEqual(cm.exception.status, dfm.ENUMERIC)
        with self.assertRaises(TypeError):
            dfm.rng.categorical(np.zeros(3), 1)          # float64 logits

    def test_time_sample(self):
        t = dfm.time_sample(1000, seed=3, eps=1e-3)
        self.assertEqual(t.dtype, np.float64)
        self.assertTrue(np.all((t >= 0) & (t <= 1 - 1e-3)))
        part = dfm.time_sample(10, seed=3, eps=1e-3, row_offset=500)
        self.assertTrue(np.array_equal(t[500:510], part))
        ts = dfm.time_sample(8, seed=3, kind="stratified", p1=8)
        self.assertTrue(np.array_equal(np.floor(ts * 8), np.arange(8)))
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.time_sample(4, seed=1, eps=1.5)
        self.assertEqual(cm.exception.status, dfm.EINVAL)


class TestSpaceScheduler(unittest.TestCase):
    def test_space(self):
        a = dfm.Space.discrete(5, 3)
        b = dfm.Space.euclidean(2)
        with dfm.Space.product(a, b) as p:
            self.assertEqual(p.kind, dfm.SPACE_PRODUCT)
            self.assertEqual((p.n_tokens, p.n_reals, p.n_parts), (3, 2, 2))
            self.assertEqual(p.parts[1], dfm.SpacePart(dfm.SPACE_EUCLIDEAN, 0, 2, 0))
            self.assertEqual(p.token_vocab(2), 5)
        self.assertTrue(p.closed)
        a.check_tokens(np.array([[0, 4, 2]], np.int32))
        with self.assertRaises(dfm.DfmError) as cm:
            a.check_tokens(np.array([[0, 1, 2], [0, 5, 1]], np.int32))
        self.assertEqual(cm.exception.status, dfm.ERANGE)
        self.assertIn("[1, 1]", str(cm.exception))
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Space.discrete(1, 3)
        self.assertEqual(cm.exception.status, dfm.EINVAL)

    def test_builtin_schedulers(self):
        v = dfm.Scheduler.condot().eval(0.25)
        self.assertEqual(tuple(v), (0.25, 0.75, 1.0, -1.0))
        s = dfm.Scheduler.polynomial(3.0)
        self.assertAlmostEqual(s.eval(0.5).alpha, 0.125)
        self.assertAlmostEqual(s.kappa_inverse(0.125), 0.5)
        c = dfm.Scheduler.cosine().eval(1.0 / 3)
        self.assertAlmostEqual(c.alpha, 0.5)
        self.assertEqual(dfm.Scheduler.linear_vp().kind, dfm.SCHED_LINEAR_VP)
        self.assertEqual(dfm.Scheduler.vp().kind, dfm.SCHED_VP)
        with self.assertRaises(dfm.DfmError) as cm:
            s.eval(1.5)
        self.assertEqual(cm.exception.status, dfm.ERANGE)

    def test_custom_scheduler(self):
        s = dfm.Scheduler.custom(lambda t: (t * t, 1 - t * t, 2 * t, -2 * t),
                                 inverse=lambda k: k ** 0.5)
        self.assertEqual(s.kind, dfm.SCHED_CUSTOM)
        self.assertAlmostEqual(s.eval(0.5).alpha, 0.25)
        self.assertAlmostEqual(s.kappa_inverse(0.25), 0.5)
        c = s.clone()
        del s
        self.assertAlmostEqual(c.eval(0.5).d_alpha, 1.0)
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Scheduler.custom(lambda t: (t, 1 - t, 1, -1)).kappa_inverse(0.5)
        self.assertEqual(cm.exception.status, dfm.EUNSUPPORTED)

    def test_custom_scheduler_exception(self):
        class Oops(Exception):
            pass

        def bad(t):
            if t > 0.5:
                raise Oops("late")
            return (t, 1 - t, 1.0, -1.0)
        s = dfm.Scheduler.custom(bad)
        self.assertAlmostEqual(s.eval(0.25).alpha, 0.25)
        with self.assertRaises(Oops) as cm:
            s.eval(0.75)
        self.assertIsInstance(cm.exception.__cause__, dfm.DfmError)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)
        # a path that copied the scheduler re-raises it from its own calls too
        sp = dfm.Space.discrete(3, 2)
        p = dfm.Path.mixture(sp, s, "uniform")
        x1 = np.zeros((2, 2), np.int32)
        p.sample(np.array([0.1, 0.2]), x1)
        with self.assertRaises(Oops):
            p.sample(np.array([0.1, 0.9]), x1)
        nan = dfm.Scheduler.custom(lambda t: (float("nan"), 1, 1, 1))
        with self.assertRaises(dfm.DfmError) as cm:
            nan.eval(0.5)
        self.assertEqual(cm.exception.status, dfm.ENUMERIC)


if __name__ == "__main__":
    unittest.main()
