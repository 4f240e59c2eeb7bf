"""Arrays users have: lists and tuples, float32 times, int64 tokens (range-checked), buffer-protocol
objects, non-contiguous inputs (copied), outputs written in place (never into a copy), logits as
(rows, d, V), seeds and counts that never wrap. PyTorch tensors: test_torch.py."""
import array
import unittest

from _common import np, dfm

from dfm import _util

V, D = 4, 3


def mixture(source="mask"):
    return dfm.Path.mixture(dfm.Space.discrete(V, D), dfm.Scheduler.condot(), source)


def logits_model(t, tokens, reals, out):
    """Posterior logits that depend on the state and time (a deterministic function)."""
    rows = len(t)
    o = out.reshape(rows, D, V)
    o[...] = np.sin(np.arange(V, dtype=np.float32))[None, None, :]
    o += (0.3 * t[:, None, None] + 0.1 * tokens[:, :, None]).astype(np.float32)
    o[:, :, V - 1] = -30.0                  # never the mask token


class TestConversions(unittest.TestCase):
    def setUp(self):
        self.path = mixture()
        self.loss = dfm.Loss.generalized_kl(self.path)
        rng = np.random.default_rng(0)
        self.x1 = rng.integers(0, V - 1, (6, D)).astype(np.int32)
        self.t = np.linspace(0.1, 0.9, 6)
        self.xt = self.path.sample(self.t, self.x1).xt_tokens
        self.out = rng.normal(size=(6, D * V)).astype(np.float32)
        self.ref = self.loss.eval(self.out, self.t, x1_tokens=self.x1, xt_tokens=self.xt)

    def check(self, **kw):
        args = dict(out=self.out, t=self.t, x1_tokens=self.x1, xt_tokens=self.xt)
        args.update(kw)
        r = self.loss.eval(args.pop("out"), args.pop("t"), **args)
        self.assertEqual(r.loss, self.ref.loss)
        self.assertTrue(np.array_equal(r.grad.reshape(6, -1), self.ref.grad))
        return r

    def test_times(self):
        for t in (self.t.tolist(), tuple(self.t), array.array("d", self.t)):
            self.check(t=t)
        t32 = self.t.astype(np.float32)          # float32 times: converted to float64 exactly
        r32 = self.loss.eval(self.out, t32, x1_tokens=self.x1, xt_tokens=self.xt)
        r64 = self.loss.eval(self.out, t32.astype(np.float64), x1_tokens=self.x1,
                             xt_tokens=self.xt)
        self.assertEqual(r32.loss, r64.loss)
        self.check(t=self.t[::-1].copy()[::-1])  # a reversed (non-contiguous) view: copied
        with self.assertRaises(ValueError):
            self.check(t=self.t[:5])
        with self.assertRaises(TypeError):
            self.check(t=[True] * 6)
        with self.assertRaises(TypeError):
            self.check(t=np.array([True] * 6))
        # a scalar, a 0-d array: every row
        r1 = self.loss.eval(self.out, 0.5, x1_tokens=self.x1, xt_tokens=self.xt)
        r2 = self.loss.eval(self.out, np.array(0.5, np.float32), x1_tokens=self.x1,
                            xt_tokens=self.xt)
        self.assertEqual(r1.loss, r2.loss)

    def test_grid_and_save_times(self):
        gen = dfm.Generator.factorized(self.path)
        a = dfm.Sampler(gen, "exact", grid=np.array([0.0, 0.3, 0.7, 1.0]), seed=4)
        b = dfm.Sampler(gen, "exact", grid=[0.0, 0.3, 0.7, 1.0], seed=4)
        c = dfm.Sampler(gen, "exact", grid=(0, 0.3, 0.7, 1), seed=4)
        ra = a.run(logits_model, rows=40, save_times=np.array([0.5]))
        for s in (b, c):
            r = s.run(logits_model, rows=40, save_times=[0.5])
            self.assertTrue(np.array_equal(r.tokens, ra.tokens))
            self.assertTrue(np.array_equal(r.saved_tokens, ra.saved_tokens))

    def test_tokens_any_integer_dtype(self):
        for dt in (np.int64, np.int16, np.uint8, np.uint64):
            self.check(x1_tokens=self.x1.astype(dt), xt_tokens=self.xt.astype(dt))
        self.check(x1_tokens=self.x1.tolist(), xt_tokens=tuple(map(tuple, self.xt)))
        self.check(x1_tokens=np.asfortranarray(self.x1))          # copied to C order
        big = np.repeat(self.x1, 2, axis=1)[:, ::2]
        self.check(x1_tokens=big)                                  # strided view: copied
        with self.assertRaises(TypeError) as cm:
            self.check(x1_tokens=self.x1.astype(np.float64))      # never truncated
        self.assertIn("x1_tokens must have dtype int32, got float64", str(cm.exception))
        with self.assertRaises(TypeError):
            self.check(x1_tokens=self.x1.astype(bool))

    def test_token_range_never_wraps(self):
        """2**32 would wrap to token 0 and -2**32 + 1 to token 1 (both valid): they raise."""
        x = self.x1.astype(np.int64)
        for bad in (1 << 32, -(1 << 32) + 1, V, -1):
            y = x.copy()
            y[2, 1] = bad
            with self.assertRaises(dfm.DfmError) as cm:
                self.loss.eval(self.out, self.t, x1_tokens=y, xt_tokens=self.xt)
            self.assertEqual(cm.exception.status, dfm.ERANGE)
            msg = cm.exception.message
            if bad in (V, -1):       # in int32: converted, then libdfm names it
                self.assertRegex(msg, r"x1_tokens\[(row )?2\]\[(coord )?1\] = %d is outside "
                                 r"\[0, %d\)" % (bad, V))
            else:
                self.assertEqual(msg, "x1_tokens[row 2][coord 1] = %d is outside the int32 "
                                 "range of tokens" % bad)
        u = self.x1.astype(np.uint64)
        u[0, 0] = np.uint64(1 << 63)
        with self.assertRaises(dfm.DfmError) as cm:
            self.path.sample(self.t, u)
        self.assertIn("x1_tokens[row 0][coord 0] = 9223372036854775808 is outside the int32",
                      cm.exception.message)

    def test_sampler_start_states(self):
        gen = dfm.Generator.factorized(self.path)
        s = dfm.Sampler(gen, "exact", steps=5, seed=2)
        x0 = np.full((30, D), V - 1, np.int32)
        x0[:, 0] = 1
        ref = s.run(logits_model, x0).tokens
        for start in (x0.astype(np.int64), x0.tolist(), np.asfortranarray(x0)):
            self.assertTrue(np.array_equal(s.run(logits_model, start).tokens, ref))
        fixed = np.zeros((30, D), bool)
        fixed[:, 0] = True
        r1 = s.run(logits_model, x0, fixed=fixed).tokens
        r2 = s.run(logits_model, x0, fixed=fixed.view(np.uint8)).tokens
        self.assertTrue(np.array_equal(r1, r2) and np.all(r1[:, 0] == 1))

    def test_float32_buffers_are_not_rounded_silently(self):
        with self.assertRaises(TypeError) as cm:
            self.check(out=self.out.astype(np.float64))
        self.assertIn("does not round to float32 silently", str(cm.exception))
        self.check(out=self.out.tolist())                         # a list has no dtype
        ep = dfm.Path.affine(dfm.Space.euclidean(2), dfm.Scheduler.condot())
        with self.assertRaises(TypeError):
            ep.sample(0.5, x1_reals=np.zeros((3, 2)))             # float64 reals
        r = ep.sample(0.5, x1_reals=[[0.0, 1.0], [2.0, 3.0]], x0_reals=[[0, 0], [0, 0]])
        self.assertTrue(np.allclose(r.xt_reals, [[0, 0.5], [1, 1.5]]))


class TestLogitsShapes(unittest.TestCase):
    def setUp(self):
        self.path = mixture()
        self.loss = dfm.Loss.generalized_kl(self.path)
        rng = np.random.default_rng(1)
        self.x1 = rng.integers(0, V - 1, (5, D)).astype(np.int32)
        self.t = np.linspace(0.2, 0.8, 5)
        self.xt = self.path.sample(self.t, self.x1).xt_tokens
        self.out = rng.normal(size=(5, D * V)).astype(np.float32)

    def test_loss_takes_both_shapes_and_writes_grad_in_place(self):
        r2 = self.loss.eval(self.out, self.t, x1_tokens=self.x1, xt_tokens=self.xt)
        r3 = self.loss.eval(self.out.reshape(5, D, V), self.t, x1_tokens=self.x1,
                            xt_tokens=self.xt)
        self.assertEqual(r2.loss, r3.loss)
        self.assertEqual(r2.grad.shape, (5, D * V))
        self.assertEqual(r3.grad.shape, (5, D, V))
        self.assertTrue(np.array_equal(r3.grad.reshape(5, -1), r2.grad))
        g = np.full((5, D, V), np.nan, np.float32)
        r = self.loss.eval(self.out.reshape(5, D, V), self.t, x1_tokens=self.x1,
                           xt_tokens=self.xt, grad=g)
        self.assertIs(r.grad, g)
        self.assertTrue(np.array_equal(g.reshape(5, -1), r2.grad))
        self.assertIsNone(self.loss.eval(self.out, self.t, x1_tokens=self.x1,
                                         xt_tokens=self.xt, grad=False).grad)
        for bad, exc in ((np.zeros((5, D * V), np.float64), TypeError),
                         (np.zeros((5, D * V + 1), np.float32), ValueError),
                         (np.zeros((5, 2 * D * V), np.float32)[:, ::2], ValueError),
                         ([[0.0] * (D * V)] * 5, TypeError)):
            with self.assertRaises(exc):
                self.loss.eval(self.out, self.t, x1_tokens=self.x1, xt_tokens=self.xt,
                               grad=bad)
        ro = np.zeros((5, D * V), np.float32)
        ro.flags.writeable = False
        with self.assertRaises(ValueError) as cm:
            self.loss.eval(self.out, self.t, x1_tokens=self.x1, xt_tokens=self.xt, grad=ro)
        self.assertIn("must be writable", str(cm.exception))
        with self.assertRaises(ValueError):
            self.loss.eval(self.out.reshape(5, V, D), self.t, x1_tokens=self.x1,
                           xt_tokens=self.xt)

    def test_mixture_rates_both_shapes(self):
        gen = dfm.Generator.factorized(self.path)
        a = gen.mixture_rates(self.t, self.xt, self.out)
        b = gen.mixture_rates(self.t, self.xt, self.out.reshape(5, D, V))
        self.assertTrue(np.array_equal(a, b))

    def test_model_fills_or_returns_either_shape(self):
        gen = dfm.Generator.factorized(self.path)
        s = dfm.Sampler(gen, "exact", steps=6, seed=5)
        ref = s.run(logits_model, rows=64).tokens
        shapes = []

        def fill3(t, tokens, reals, out):
            shapes.append(out.shape)
            logits_model(t, tokens, reals, out.reshape(len(t), D * V))

        def ret3(t, tokens, reals, out):
            o = np.empty((len(t), D * V), np.float32)
            logits_model(t, tokens, reals, o)
            return o.reshape(len(t), D, V)

        def ret2(t, tokens, reals, out):
            o = np.empty((len(t), D * V), np.float32)
            logits_model(t, tokens, reals, o)
            return o
        self.assertTrue(np.array_equal(s.run(fill3, rows=64, out_shape="3d").tokens, ref))
        self.assertEqual(set(shapes), {(64, D, V)})
        for m, shape in ((ret3, "2d"), (ret2, "2d"), (ret3, "3d")):
            self.assertTrue(np.array_equal(s.run(m, rows=64, out_shape=shape).tokens, ref))

        def wrong(t, tokens, reals, out):
            return np.zeros((len(t), V, D), np.float32)
        with self.assertRaises(ValueError):
            s.run(wrong, rows=4)
        # the ELBO's model takes the same forms
        a = self.loss.elbo(logits_model, self.x1, n_t=3)
        b = self.loss.elbo(fill3, self.x1, n_t=3, out_shape="3d")
        self.assertTrue(np.array_equal(a[0], b[0]))

    def test_3d_needs_a_token_only_output(self):
        ep = dfm.Path.affine(dfm.Space.euclidean(2), dfm.Scheduler.condot())
        s = dfm.Sampler(dfm.Generator.velocity(ep), "euler", steps=2)
        with self.assertRaises(ValueError) as cm:
            s.run(lambda t, tk, r, out: None, rows=3, out_shape="3d")
        self.assertIn("token-only output", str(cm.exception))

    def test_trainer_out_shape(self):
        loss = dfm.Loss.generalized_kl(self.path)
        grads = {}

        def fwd(t, tokens, reals, out):
            logits_model(t, tokens, reals, out.reshape(len(t), D * V))

        def bwd(key):
            def b(t, tokens, reals, out, grad):
                self.assertTrue(grad.flags.writeable and out.flags.writeable)
                grads[key] = grad.copy()
            return b
        a = dfm.Trainer(self.path, loss, seed=3).step(fwd, bwd("2d"), self.x1)
        b = dfm.Trainer(self.path, loss, seed=3).step(fwd, bwd("3d"), self.x1, out_shape="3d")
        self.assertEqual(a.loss, b.loss)
        self.assertEqual(grads["3d"].shape, (5, D, V))
        self.assertTrue(np.array_equal(grads["3d"].reshape(5, -1), grads["2d"]))


class TestScalars(unittest.TestCase):
    def test_seeds_never_wrap(self):
        s = dfm.Sampler(dfm.Generator.factorized(mixture()), "exact", steps=2)
        top = (1 << 64) - 1
        s.seed = top
        self.assertEqual(s.seed, top)
        s.set_option("seed", 1 << 63)
        self.assertEqual(s.get_option("seed"), 1 << 63)
        s.seed = np.uint64(5)
        self.assertEqual(s.seed, 5)
        for bad, exc in ((-1, ValueError), (1 << 64, ValueError), (1.0, TypeError),
                         (True, TypeError), ("1", TypeError)):
            with self.assertRaises(exc):
                s.seed = bad
            with self.assertRaises(exc):
                dfm.rng.uniform(bad)
            with self.assertRaises(exc):
                dfm.time_sample(3, bad)
            with self.assertRaises(exc):
                dfm.rng.fill(2, 2, bad)
        self.assertEqual(s.seed, 5)
        self.assertNotEqual(dfm.rng.uniform(top), dfm.rng.uniform(0))
        self.assertAlmostEqual(dfm.rng.uniform(top, 1, 2, 3, 4),
                               dfm.rng.fill(1, 4, top, stream=1, row_offset=2, step=4)[0, 3],
                               places=6)
        for kw in ({"coord": 1 << 32}, {"step": -1}, {"row": 1 << 56}, {"stream": 256}):
            with self.assertRaises(ValueError):
                dfm.rng.uniform(1, **kw)
        with self.assertRaises(ValueError):
            dfm.time_sample(3, 1, draw=1 << 32)
        path = mixture()
        with self.assertRaises(ValueError):
            path.sample(0.5, np.zeros((2, D), np.int32), draw=-1)

    def test_counts_and_options(self):
        s = dfm.Sampler(dfm.Generator.factorized(mixture()), "exact")
        with self.assertRaises(TypeError):
            s.set_steps(2.5)
        with self.assertRaises(ValueError):
            s.set_steps(1 << 64)
        with self.assertRaises(ValueError):
            s.set_int(dfm.OPT_THREADS, 1 << 64)            # would wrap to 0 as an int64
        with self.assertRaises(TypeError):
            s.set_int(dfm.OPT_THREADS, 1.5)
        with self.assertRaises(ValueError):
            dfm.rng.fill(2, 2, 1, row_offset=-1)


class TestOutputsInPlace(unittest.TestCase):
    def test_fill_lands_in_the_callers_array(self):
        out = np.zeros((3, 4), np.float32)
        r = dfm.rng.fill(3, 4, 9, out=out)
        self.assertIs(r, out)
        self.assertTrue(np.array_equal(out, dfm.rng.fill(3, 4, 9)))
        big = np.zeros((3, 8), np.float32)
        with self.assertRaises(ValueError) as cm:
            dfm.rng.fill(3, 4, 9, out=big[:, ::2])
        self.assertIn("C-contiguous to be written in place", str(cm.exception))
        self.assertFalse(big.any())
        with self.assertRaises(TypeError):
            dfm.rng.fill(3, 4, 9, out=np.zeros((3, 4)))

    def test_conversion_rules_directly(self):
        a = np.arange(6, dtype=np.int32).reshape(2, 3)
        self.assertIs(_util.arr(a, _util.I32, (2, 3), "x"), a)             # no copy
        m = memoryview(array.array("i", range(6)))
        b = _util.arr(m, _util.I32, (6,), "x")
        self.assertTrue(np.shares_memory(b, np.asarray(m)))                 # buffer: a view
        with self.assertRaises(TypeError):
            _util.arr(object(), _util.F32, None, "x")
        with self.assertRaises(ValueError):
            _util.arr([[1, 2], [3]], _util.I32, None, "x")                  # ragged


if __name__ == "__main__":
    unittest.main()
