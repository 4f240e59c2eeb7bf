"""Discrete flow matching end to end: exact-target sampling, reproducibility, the generalized-KL
loss against numpy and finite differences, NaN logits."""
import unittest

from _common import np, dfm, chi2, chi2_bound

V, D = 3, 2
# A correlated target q over [3]^2 (row-major: q[x0, x1]).
Q = np.array([[0.20, 0.02, 0.08],
              [0.05, 0.25, 0.03],
              [0.12, 0.01, 0.24]])
Q = Q / Q.sum()
X1 = np.array([[a, b] for a in range(V) for b in range(V)], np.int32)   # the 9 states
ONEHOT = [np.eye(V)[X1[:, i]] for i in range(D)]                         # (9, V) per coord


def kappa(t):
    return t * t                                  # polynomial scheduler, n = 2


def posterior_logits(q, t, x):
    """Exact per-coordinate posterior logits p_{1|t}(. | x) of the mixture path with uniform
    source: (rows, D * V) float32."""
    k = kappa(t)[:, None]                                         # (rows, 1)
    lik = np.ones((x.shape[0], len(X1)))
    for i in range(D):
        match = x[:, i][:, None] == X1[None, :, i]                # (rows, 9)
        lik *= np.where(match, (1 - k) / V + k, (1 - k) / V)
    w = q.reshape(-1)[None, :] * lik
    post = w / w.sum(axis=1, keepdims=True)
    out = np.concatenate([post @ ONEHOT[i] for i in range(D)], axis=1)
    return np.log(np.maximum(out, 1e-30)).astype(np.float32)


def exact_model(q):
    """The model: exact posterior logits. Rows share one time in a sampler call, so the logits
    are tabulated over the 9 states and gathered (the general path is kept for other calls)."""
    def model(t, tokens, reals, out):
        assert reals is None and tokens.dtype == np.int32 and tokens.shape[1] == D
        if len(t) and np.all(t == t[0]):
            table = posterior_logits(q, np.full(len(X1), t[0]), X1)
            out[...] = table[tokens[:, 0] * V + tokens[:, 1]]
        else:
            out[...] = posterior_logits(q, t, tokens)
    return model


def marginal_pt(q, t):
    """p_t over [3]^2 (9,) of the mixture path, uniform source."""
    k = kappa(t)
    cond = (1 - k) / V + k * np.eye(V)                            # cond[x1, x]
    return np.einsum("ab,ac,bd->cd", q, cond, cond).reshape(-1)


def make(method="exact", steps=400, seed=1234):
    space = dfm.Space.discrete(V, D)
    sched = dfm.Scheduler.polynomial(2.0)
    path = dfm.Path.mixture(space, sched, "uniform")
    gen = dfm.Generator.factorized(path, "logits")
    return path, gen, dfm.Sampler(gen, method, steps=steps, seed=seed)


def hist(tokens):
    return np.bincount(tokens[:, 0] * V + tokens[:, 1], minlength=V * V)


class TestExactTarget(unittest.TestCase):
    """Samples of the exact posterior model follow q (chi-square at the 1e-4 level; with 400
    exact steps the factorized-step bias is well under the bound, with 20 it is far over)."""
    N = 20000

    def test_samples_follow_q(self):
        _, gen, s = make()
        self.assertEqual(gen.out_stride, D * V)
        r = s.run(exact_model(Q), rows=self.N, save_times=np.array([0.5]))
        self.assertEqual(r.tokens.shape, (self.N, D))
        st, k = chi2(hist(r.tokens), Q.reshape(-1))
        self.assertLess(st, chi2_bound(k), "final chi2 %g (dof %d)" % (st, k))
        # the state saved at t = 0.5 follows the exact marginal p_t
        st, k = chi2(hist(r.saved_tokens[0]), marginal_pt(Q, 0.5))
        self.assertLess(st, chi2_bound(k), "t = 0.5 chi2 %g (dof %d)" % (st, k))
        stats = s.stats()
        self.assertEqual(stats["model_calls"], 400)
        self.assertGreater(stats["jumps"], 0)

    def test_a_wrong_model_fails_the_same_bound(self):
        _, _, s = make()
        wrong = Q.T.copy()                                        # a different target
        r = s.run(exact_model(wrong), rows=self.N)
        st, k = chi2(hist(r.tokens), Q.reshape(-1))
        self.assertGreater(st, chi2_bound(k))

    def test_euler_method(self):
        # Euler's O(h) bias on this correlated q needs small steps to stay under the bound
        _, _, s = make("euler", steps=1000)
        r = s.run(exact_model(Q), rows=self.N // 2)
        st, k = chi2(hist(r.tokens), Q.reshape(-1))
        self.assertLess(st, chi2_bound(k), "euler chi2 %g (dof %d)" % (st, k))

    def test_bit_identical_with_a_seed(self):
        _, _, s = make(steps=20, seed=99)
        a = s.run(exact_model(Q), rows=2000).tokens
        b = s.run(exact_model(Q), rows=2000).tokens
        self.assertTrue(np.array_equal(a, b))
        _, _, s2 = make(steps=20, seed=99)
        s2.threads = 2
        self.assertEqual(s2.threads, 2)
        c = s2.run(exact_model(Q), rows=2000).tokens
        self.assertTrue(np.array_equal(a, c))
        # a shard with row_offset reproduces its rows of the whole batch
        d = s2.run(exact_model(Q), rows=500, row_offset=1000).tokens
        self.assertTrue(np.array_equal(a[1000:1500], d))
        s2.seed = 100
        e = s2.run(exact_model(Q), rows=2000).tokens
        self.assertFalse(np.array_equal(a, e))

    def test_chunked_model_calls(self):
        _, _, s = make(steps=10, seed=7)
        a = s.run(exact_model(Q), rows=300).tokens
        calls = []

        def model(t, tokens, reals, out, info):
            calls.append((info.step, info.row_offset, info.rows))
            exact_model(Q)(t, tokens, reals, out)
        s.set_option("chunk_rows", 64)
        s.threads = 2
        self.assertEqual(s.get_option("chunk_rows"), 64)
        b = s.run(model, rows=300).tokens
        self.assertTrue(np.array_equal(a, b))
        self.assertEqual(len(calls), 10 * 5)
        self.assertEqual([c[1:] for c in calls[:5]], [(0, 64), (64, 64), (128, 64), (192, 64), (256, 44)])
        s.set_option("chunk_rows", dfm.CHUNK_AUTO)
        self.assertTrue(np.array_equal(a, s.run(exact_model(Q), rows=300).tokens))

    def test_start_states_are_not_modified_and_fixed_positions_hold(self):
        _, _, s = make(steps=10)
        x0 = np.zeros((500, D), np.int32)
        fixed = np.zeros((500, D), bool)
        fixed[:, 1] = True
        r = s.run(exact_model(Q), x0, fixed=fixed)
        self.assertTrue(np.all(x0 == 0))
        self.assertTrue(np.all(r.tokens[:, 1] == 0))
        self.assertTrue(np.any(r.tokens[:, 0] != 0))

    def test_model_info_and_progress(self):
        _, _, s = make(steps=8)
        seen = []

        def model(t, tokens, reals, out, info):
            seen.append(info.step)
            out[...] = posterior_logits(Q, t, tokens)
        steps = []
        s.run(model, rows=10, progress=lambda k, n, t: steps.append((k, n, t)))
        self.assertEqual(seen, list(range(8)))
        self.assertEqual(len(steps), 8)
        self.assertEqual(steps[-1][1], 8)

        def stop(k, n, t):
            return k >= 2
        with self.assertRaises(dfm.DfmError) as cm:
            s.run(exact_model(Q), rows=10, progress=stop)
        self.assertEqual(cm.exception.status, dfm.ESTOPPED)
        self.assertEqual(s.stats()["steps"], 3)


class TestOptions(unittest.TestCase):
    def test_custom_source(self):
        p0 = np.array([0.5, 0.2, 0.3])
        path = dfm.Path.mixture(dfm.Space.discrete(V, D), dfm.Scheduler.condot(), p0)
        path.seed = 3
        x1 = np.zeros((20000, D), np.int32)
        xt = path.sample(0.0, x1).xt_tokens
        st, k = chi2(np.bincount(xt.reshape(-1), minlength=V), p0)
        self.assertLess(st, chi2_bound(k))
        for src in (p0.tolist(), tuple(p0)):                  # lists and tuples: the same path
            other = dfm.Path.mixture(dfm.Space.discrete(V, D), dfm.Scheduler.condot(), src)
            other.seed = 3
            self.assertTrue(np.array_equal(other.sample(0.0, x1).xt_tokens, xt))
        dfm.Path.mixture(dfm.Space.discrete(V, D), dfm.Scheduler.condot(),
                         p0.astype(np.float32))                 # float32: converted
        with self.assertRaises(TypeError):
            dfm.Path.mixture(dfm.Space.discrete(V, D), dfm.Scheduler.condot(), ["a", "b", "c"])

    def test_sampler_options_and_corrector(self):
        _, _, s = make(steps=200)
        s.configure(temperature=1.0, eta=0.0)
        self.assertEqual(s.get_option("temperature"), 1.0)
        self.assertEqual(s.method, dfm.METHOD_EXACT)
        s.set_corrector(lambda t: 0.5 * t * (1 - t))
        r = s.run(exact_model(Q), rows=10000)
        st, k = chi2(hist(r.tokens), Q.reshape(-1))
        self.assertLess(st, chi2_bound(k), "corrector chi2 %g" % st)

        def bad(t):
            raise LookupError("corrector")
        s.set_corrector(bad)
        with self.assertRaises(LookupError) as cm:
            s.run(exact_model(Q), rows=10)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)
        s.set_corrector(None)
        s.run(exact_model(Q), rows=10)
        s.set_grid(np.linspace(0.0, 1.0, 11) ** 2)
        s.run(exact_model(Q), rows=10)
        self.assertEqual(s.stats()["steps"], 10)


class TestGeneralizedKL(unittest.TestCase):
    def setUp(self):
        self.path, self.gen, _ = make()
        rng = np.random.default_rng(5)
        self.rows = 6
        self.t = rng.uniform(0.05, 0.9, self.rows)
        self.x1 = rng.integers(0, V, (self.rows, D)).astype(np.int32)
        self.xt = self.path.sample(self.t, self.x1, draw=3).xt_tokens
        self.xt[0] = self.x1[0]                                   # both cases present
        self.xt[1] = (self.x1[1] + 1) % V
        self.z = rng.normal(0, 1.5, (self.rows, D * V)).astype(np.float32)

    def numpy_loss(self, z):
        z = z.astype(np.float64).reshape(self.rows, D, V)
        p = np.exp(z - z.max(axis=2, keepdims=True))
        p /= p.sum(axis=2, keepdims=True)
        k, dk = kappa(self.t), 2 * self.t
        c = (dk / (1 - k))[:, None]
        r = np.arange(self.rows)[:, None]
        i = np.arange(D)[None, :]
        same = (self.x1 == self.xt).astype(np.float64)
        return -c * (p[r, i, self.xt] - same + (1 - same) * np.log(p[r, i, self.x1]))

    def test_value_and_gradient(self):
        loss = dfm.Loss.generalized_kl(self.path)
        self.assertEqual(loss.kind, dfm.LOSS_GENERALIZED_KL)
        self.assertEqual(loss.reduction, dfm.REDUCE_MEAN)
        res = loss.eval(self.z, self.t, x1_tokens=self.x1, xt_tokens=self.xt)
        want = self.numpy_loss(self.z)
        self.assertAlmostEqual(res.loss, want.mean(), delta=1e-5 * max(1, abs(want.mean())))
        self.assertIsNone(res.values)
        # central finite differences on the float32 inputs
        loss.reduction = "sum"
        g = loss.eval(self.z, self.t, x1_tokens=self.x1, xt_tokens=self.xt).grad
        fd = np.zeros_like(g, dtype=np.float64)
        for j in range(self.z.size):
            zp, zm = self.z.copy(), self.z.copy()
            zp.flat[j] += np.float32(1e-2)
            zm.flat[j] -= np.float32(1e-2)
            lp = loss.eval(zp, self.t, x1_tokens=self.x1, xt_tokens=self.xt, grad=False).loss
            lm = loss.eval(zm, self.t, x1_tokens=self.x1, xt_tokens=self.xt, grad=False).loss
            fd.flat[j] = (lp - lm) / (float(zp.flat[j]) - float(zm.flat[j]))
        err = np.max(np.abs(fd - g)) / max(1.0, np.max(np.abs(fd)))
        self.assertLess(err, 1e-3, "gradient vs finite differences: %g" % err)
        # per-coordinate values
        loss.reduction = "none"
        res = loss.eval(self.z, self.t, x1_tokens=self.x1, xt_tokens=self.xt)
        self.assertEqual(res.values.shape, (self.rows, D))
        self.assertTrue(np.allclose(res.values, self.numpy_loss(self.z), rtol=1e-5, atol=1e-6))
        self.assertAlmostEqual(res.loss, res.values.sum(), places=6)

    def test_cross_entropy(self):
        loss = dfm.Loss.cross_entropy(self.path)
        res = loss.eval(self.z, self.t, x1_tokens=self.x1, xt_tokens=self.xt)
        z = self.z.astype(np.float64).reshape(self.rows, D, V)
        lse = np.log(np.exp(z).sum(axis=2))
        r, i = np.arange(self.rows)[:, None], np.arange(D)[None, :]
        want = (lse - z[r, i, self.x1]).mean()
        self.assertAlmostEqual(res.loss, want, delta=1e-5)

    def test_mixture_rates(self):
        rates = self.gen.mixture_rates(self.t, self.xt, self.z)
        z = self.z.astype(np.float64).reshape(self.rows, D, V)
        p = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
        c = (2 * self.t / (1 - kappa(self.t)))[:, None, None]
        want = c * (p - np.eye(V)[self.xt])
        self.assertTrue(np.allclose(rates, want, rtol=1e-4, atol=1e-5))

    def test_nan_logits(self):
        z = self.z.copy()
        z[2, 4] = np.nan
        with self.assertRaises(dfm.DfmError) as cm:
            self.gen.mixture_rates(self.t, self.xt, z)
        self.assertEqual(cm.exception.status, dfm.ENUMERIC)
        self.assertTrue(cm.exception.message)
        _, _, s = make(steps=4)

        def nan_model(t, tokens, reals, out):
            out[...] = 0.0
            out[3, 1] = np.nan
        with self.assertRaises(dfm.DfmError) as cm:
            s.run(nan_model, rows=8)
        self.assertEqual(cm.exception.status, dfm.ENUMERIC)
        self.assertEqual(cm.exception.message, s.last_error())
        self.assertIn("row", cm.exception.message)

    def test_elbo(self):
        loss = dfm.Loss.generalized_kl(self.path)
        x = X1.copy()
        nelbo, se = loss.elbo(exact_model(Q), x, n_t=64)
        self.assertEqual(nelbo.shape, (9,))
        # the exact posterior's bound is at least -log q and close to it
        self.assertTrue(np.all(nelbo + 4 * se >= -np.log(Q.reshape(-1)) - 1e-6))


if __name__ == "__main__":
    unittest.main()
