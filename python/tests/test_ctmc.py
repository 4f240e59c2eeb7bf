"""Finite state spaces: finite and metric paths, rate-matrix generators, the Bregman loss and
the Kolmogorov workspace, through the Python package."""
import unittest

from _common import np, dfm, chi2, chi2_bound

S = 3
Q1 = np.array([0.5, 0.15, 0.35])          # target over the 3 states


def mixture_cond(t, x1, p, dp):
    """p_t(. | x1) = (1 - t)/S + t delta(., x1) and its time derivative."""
    p[:] = (1 - t) / S
    p[x1] += t
    dp[:] = -1.0 / S
    dp[x1] += 1.0


def state_logits_model(t, tokens, reals, out):
    """Exact posterior p_{1|t}(x1 | x) over the S states as logits."""
    x = tokens[:, 0]
    lik = (1 - t)[:, None] / S + t[:, None] * (x[:, None] == np.arange(S)[None, :])
    out[...] = np.log(Q1[None, :] * lik)


class TestFinite(unittest.TestCase):
    def setUp(self):
        self.space = dfm.Space.discrete(S, 1)
        self.path = dfm.Path.finite(self.space, mixture_cond)

    def test_cond_probs_and_rates(self):
        p = self.path
        self.assertEqual(p.kind, dfm.PATH_FINITE)
        self.assertIsNone(p.scheduler)
        probs = p.cond_probs(0.25, 2)
        self.assertTrue(np.allclose(probs, [0.25, 0.25, 0.5]))
        Q = p.cond_rates(0.25, 2)
        pp, dp = np.empty(S), np.empty(S)
        mixture_cond(0.25, 2, pp, dp)
        self.assertTrue(np.allclose(Q, dfm.ctmc.kinetic_rates(pp, dp)))
        self.assertTrue(np.allclose(pp @ Q, dp))               # Kolmogorov forward equation
        with self.assertRaises(dfm.DfmError) as cm:
            p.cond_rates(1.0, 0)
        self.assertEqual(cm.exception.status, dfm.ERANGE)

    def test_rate_matrix_sampling_follows_the_target(self):
        g = dfm.Generator.rate_matrix(self.path, param="state_logits")
        self.assertEqual(g.kind, dfm.GEN_RATE_MATRIX)
        self.assertEqual(g.out_stride, S)
        for method in ("uniformization", "euler"):
            s = dfm.Sampler(g, method, steps=200, seed=4)
            r = s.run(state_logits_model, rows=6000)
            st, k = chi2(np.bincount(r.tokens[:, 0], minlength=S), Q1)
            self.assertLess(st, chi2_bound(k), "%s chi2 %g" % (method, st))
        r = s.run(state_logits_model, rows=6000, save_times=np.array([0.5]))
        st, k = chi2(np.bincount(r.saved_tokens[0][:, 0], minlength=S), 0.5 / S + 0.5 * Q1)
        self.assertLess(st, chi2_bound(k))

    def test_path_callback_exception(self):
        def bad(t, x1, p, dp):
            raise ArithmeticError("bad path")
        p = dfm.Path.finite(self.space, bad)
        with self.assertRaises(ArithmeticError) as cm:
            p.cond_probs(0.5, 1)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)

    def test_bregman_loss(self):
        g = dfm.Generator.rate_matrix(self.path, param="rates")
        loss = dfm.Loss.bregman_rates(g)
        loss.reduction = "sum"
        t = np.array([0.2, 0.6])
        x1 = np.array([[2], [0]], np.int32)
        xt = np.array([[0], [0]], np.int32)
        out = np.array([[0.0, 0.7, 1.9], [0.0, 0.4, 0.3]], np.float32)
        res = loss.eval(out, t, x1_tokens=x1, xt_tokens=xt)
        want, grad = 0.0, np.zeros((2, S))
        for r in range(2):
            a = self.path.cond_rates(t[r], int(x1[r, 0]))[xt[r, 0]].copy()
            b = out[r].astype(np.float64)
            a[xt[r, 0]] = 0.0
            b[xt[r, 0]] = 0.0
            v, gr = dfm.ctmc.bregman_rates(a, b)
            want += v
            grad[r] = gr
            grad[r, xt[r, 0]] = 0.0
        self.assertAlmostEqual(res.loss, want, delta=1e-5 * max(1.0, want))
        off = np.ones((2, S), bool)
        off[np.arange(2), xt[:, 0]] = False
        self.assertTrue(np.allclose(res.grad[off], grad[off], rtol=1e-4, atol=1e-5))


class TestMetric(unittest.TestCase):
    def test_metric_path(self):
        V = 5
        dist = np.abs(np.subtract.outer(np.arange(V), np.arange(V))).astype(np.float64)
        sp = dfm.Space.discrete(V, 2)
        p = dfm.Path.metric(sp, dfm.Scheduler.condot(), 2.0, dist)
        pf = dfm.Path.metric(sp, dfm.Scheduler.condot(), 2.0,
                             lambda x1, d: d.__setitem__(slice(None), dist[x1]))
        t, x1 = 0.4, 1
        beta = 2.0 * t / (1 - t)
        w = np.exp(-beta * dist[:, x1])
        self.assertTrue(np.allclose(p.cond_probs(t, x1), w / w.sum()))
        self.assertTrue(np.allclose(pf.cond_probs(t, x1), w / w.sum()))
        g = dfm.Generator.metric(p)
        self.assertEqual(g.out_stride, 2 * V)
        s = dfm.Sampler(g, "euler", steps=10, seed=1)
        r = s.run(lambda t, tk, rl, out: 0.0, rows=50)
        self.assertTrue(np.all((r.tokens >= 0) & (r.tokens < V)))
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Path.metric(sp, dfm.Scheduler.condot(), 2.0, dist + 1.0)   # d(x, x) != 0
        self.assertEqual(cm.exception.status, dfm.EINVAL)


class TestWorkspace(unittest.TestCase):
    def test_kernel_and_propagation(self):
        Q = np.array([[0.0, 1.0, 0.5], [0.2, 0.0, 0.3], [0.0, 2.0, 0.0]])
        G = Q - np.diag(Q.sum(axis=1))
        with dfm.Ctmc(3) as w:
            K = w.kernel(Q, 0.7)
            self.assertTrue(np.allclose(K.sum(axis=1), 1.0))
            # exp by its series on a small norm
            E, term = np.eye(3), np.eye(3)
            for k in range(1, 30):
                term = term @ (0.7 * G) / k
                E = E + term
            self.assertTrue(np.allclose(K, E, atol=1e-12))
            self.assertTrue(np.allclose(w.expm(G, 0.7), E, atol=1e-12))
            p0 = np.array([[1.0, 0.0, 0.0]])
            self.assertTrue(np.allclose(w.propagate(p0, Q, 0.7), p0 @ E))
            pt = w.propagate_ode(p0, lambda t, M: M.__setitem__(slice(None), Q), 0.0, 0.7, 50)
            self.assertTrue(np.allclose(pt, p0 @ E, atol=1e-8))
        sp = dfm.Space.discrete(3, 2)
        tok = np.array([[0, 0], [1, 2], [2, 2]], np.int32)
        st = dfm.ctmc.flatten(sp, tok)
        self.assertEqual(list(st), [0, 5, 8])
        self.assertTrue(np.array_equal(dfm.ctmc.unflatten(sp, st), tok))
        self.assertEqual(dfm.ctmc.n_states(sp), 9)


if __name__ == "__main__":
    unittest.main()
