"""Continuous flows end to end: a Gaussian target with its closed-form marginal velocity."""
import unittest

from _common import np, dfm

MU = np.array([1.0, -2.0])
SIGMA = np.array([[1.0, 0.6], [0.6, 0.5]])
DIM = 2


def affine_velocity(t, x):
    """Exact marginal velocity of the CondOT path from N(0, I) to N(MU, SIGMA): v = mu + A (x - t
    mu), A = (t SIGMA - (1 - t) I) C^-1, C = t^2 SIGMA + (1 - t)^2 I. Returns (v, trace A)."""
    v = np.empty_like(x, dtype=np.float64)
    div = np.empty(len(t))
    for tt in np.unique(t):
        rows = t == tt
        C = tt * tt * SIGMA + (1 - tt) ** 2 * np.eye(DIM)
        A = (tt * SIGMA - (1 - tt) * np.eye(DIM)) @ np.linalg.inv(C)
        v[rows] = MU + (x[rows] - tt * MU) @ A.T
        div[rows] = np.trace(A)
    return v, div


def model(t, tokens, reals, out):
    assert tokens is None and reals.dtype == np.float32
    out[...] = affine_velocity(t, reals.astype(np.float64))[0]


def gaussian_logpdf(x):
    d = x - MU
    P = np.linalg.inv(SIGMA)
    return -0.5 * (np.einsum("ri,ij,rj->r", d, P, d) + np.log(np.linalg.det(SIGMA))
                   + DIM * np.log(2 * np.pi))


def make(param="velocity"):
    space = dfm.Space.euclidean(DIM)
    path = dfm.Path.affine(space, dfm.Scheduler.condot())
    return path, dfm.Generator.velocity(path, param)


class TestGaussian(unittest.TestCase):
    N = 20000

    def check_moments(self, x, k=5.0):
        n = len(x)
        m = x.mean(axis=0)
        sd = np.sqrt(np.diag(SIGMA) / n)
        self.assertTrue(np.all(np.abs(m - MU) < k * sd), "mean %s" % m)
        cov = np.cov(x.T)
        # sd of a sample covariance entry: sqrt((S_ij^2 + S_ii S_jj) / n)
        csd = np.sqrt((SIGMA ** 2 + np.outer(np.diag(SIGMA), np.diag(SIGMA))) / n)
        self.assertTrue(np.all(np.abs(cov - SIGMA) < k * csd), "cov %s" % cov)

    def test_ode_rk4(self):
        path, gen = make()
        self.assertEqual(path.kind, dfm.PATH_AFFINE)
        self.assertEqual(gen.out_stride, DIM)
        s = dfm.Sampler(gen, "rk4", steps=40, seed=3)
        r = s.run(model, rows=self.N)
        self.assertIsNone(r.tokens)
        self.assertEqual(r.reals.dtype, np.float32)
        self.check_moments(r.reals.astype(np.float64))
        self.assertEqual(s.stats()["model_calls"], 160)

    def test_ode_from_given_source_is_the_exact_transport(self):
        # the flow of a Gaussian is linear: x1 = mu + SIGMA^{1/2}-like map of x0; check moments
        # and that a wrong velocity is caught by the same bound
        path, gen = make()
        s = dfm.Sampler(gen, "dopri5", atol=1e-7, rtol=1e-7)
        x0 = dfm.rng.fill(self.N, DIM, seed=11, kind="normal")
        r = s.run(model, reals=x0)
        self.assertTrue(np.array_equal(x0, dfm.rng.fill(self.N, DIM, seed=11, kind="normal")))
        self.check_moments(r.reals.astype(np.float64))
        self.assertGreater(s.stats()["steps"], 0)

        def wrong(t, tokens, reals, out):
            out[...] = affine_velocity(t, reals.astype(np.float64))[0] * 1.05
        r = s.run(wrong, reals=x0)
        with self.assertRaises(AssertionError):
            self.check_moments(r.reals.astype(np.float64))

    def test_sde(self):
        path, _ = make()
        gen = dfm.Generator.diffusion(path, "velocity", g=lambda t: 0.5 * t)
        s = dfm.Sampler(gen, "euler_maruyama", steps=200, seed=5)
        r = s.run(model, rows=self.N // 2)
        self.check_moments(r.reals.astype(np.float64), k=6.0)

    def test_sampling_scheduler_transform(self):
        # a model of the CondOT path sampled through the cosine scheduler has the same marginals
        _, gen = make()
        gen.set_sampling_scheduler(dfm.Scheduler.cosine())
        s = dfm.Sampler(gen, "rk4", steps=60, seed=8)
        r = s.run(model, rows=self.N)
        self.check_moments(r.reals.astype(np.float64))
        gen.set_sampling_scheduler(None)

    def test_path_sample_and_mse(self):
        path, gen = make()
        rows = 7
        t = np.linspace(0.1, 0.9, rows)
        x1 = dfm.rng.fill(rows, DIM, seed=1, kind="normal")
        x0 = dfm.rng.fill(rows, DIM, seed=2, kind="normal")
        ps = path.sample(t, x1_reals=x1, x0_reals=x0)
        self.assertTrue(np.allclose(ps.xt_reals, t[:, None] * x1 + (1 - t[:, None]) * x0,
                                    atol=1e-6))
        self.assertTrue(np.allclose(ps.target_reals, x1 - x0, atol=1e-6))
        self.assertTrue(np.array_equal(ps.x0_reals, x0))
        drawn = path.sample(0.5, x1_reals=x1)
        self.assertEqual(drawn.xt_reals.shape, (rows, DIM))
        loss = dfm.Loss.mse(gen)
        loss.reduction = "sum"
        out = (x1 - x0 + 0.1).astype(np.float32)
        res = loss.eval(out, t, x0_reals=x0, x1_reals=x1, xt_reals=ps.xt_reals)
        want = np.sum((out.astype(np.float64) - (x1 - x0)) ** 2)
        self.assertAlmostEqual(res.loss, want, delta=1e-4 * want)
        self.assertTrue(np.allclose(res.grad, 2 * (out - (x1 - x0)), atol=1e-4))
        # conversions: the x1 prediction of the exact velocity is E[X1 | x]
        v = (x1 - x0)
        x1hat = path.affine_convert("velocity", "x1", t, ps.xt_reals, v)
        self.assertTrue(np.allclose(x1hat, x1, atol=1e-4))

    def test_log_likelihood(self):
        _, gen = make()
        s = dfm.Sampler(gen, "rk4", steps=40)
        x1 = (MU + dfm.rng.fill(50, DIM, seed=4, kind="normal") @ np.linalg.cholesky(SIGMA).T
              ).astype(np.float32)

        def div(t, tokens, reals, out):
            out[...] = affine_velocity(t, reals.astype(np.float64))[1]
        ll = s.log_likelihood(model, x1, divergence=div)
        want = gaussian_logpdf(x1.astype(np.float64))
        self.assertLess(np.max(np.abs(ll.logp - want)), 1e-3)
        self.assertTrue(np.all(ll.logp_var == 0))
        hut = s.log_likelihood(model, x1, n_probes=8)
        # Hutchinson is unbiased: the mean error over rows is within its standard error
        err = np.mean(hut.logp - want)
        self.assertLess(abs(err), 5 * np.sqrt(np.sum(hut.logp_var)) / len(x1) + 1e-3)


if __name__ == "__main__":
    unittest.main()
