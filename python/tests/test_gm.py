"""Generator matching across processes through the Python package: a joint discrete + continuous
target sampled with a product generator against its exact joint posterior, a flow + diffusion
superposition reproducing a Gaussian, guidance with its per-step clamp count, the trainer
against dfm_loss_eval_parts, the general GM loss, exceptions from every new callback, bad
input."""
import ctypes
import gc
import math
import os
import shutil
import subprocess
import tempfile
import unittest

from _common import chi2, chi2_bound, np, dfm

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

MASK = 4                                   # token part: data 0..3, mask 4 (V = 5)
JPI = np.array([0.1, 0.2, 0.3, 0.4])
JMU = np.array([-3.0, -1.0, 1.0, 3.0])
JS = 0.5


class Oops(Exception):
    pass


def mixture(d, V=5, source="mask"):
    return dfm.Path.mixture(dfm.Space.discrete(V, d), dfm.Scheduler.condot(), source)


def affine(D):
    return dfm.Path.affine(dfm.Space.euclidean(D), dfm.Scheduler.condot())


def joint_posterior(tz, ty, z, y, ignore_real=False):
    """Posterior weights (rows, 4) of the token's data value k given the token z at time tz and
    the real y at time ty (CondOT, mask source), for q(k, y) = pi_k N(y; mu_k, JS^2)."""
    V = ty * ty * JS * JS + (1 - ty) ** 2
    pz = np.where(z[:, None] == MASK, (1 - tz)[:, None],
                  np.where(z[:, None] == np.arange(4)[None, :], tz[:, None], 0.0))
    with np.errstate(divide="ignore"):
        lw = np.log(JPI)[None, :] + np.log(pz)
    if not ignore_real:
        lw = lw - 0.5 * (y[:, None] - ty[:, None] * JMU[None, :]) ** 2 / V[:, None]
    lw -= lw.max(axis=1, keepdims=True)
    w = np.exp(lw)
    return w / w.sum(axis=1, keepdims=True), V


class JointModel:
    """Exact joint model of the product (token logits | E[X1 | x_t] of the real), both
    conditioned on the full state and on the per-part times."""

    def __init__(self, ignore_real=False):
        self.ignore_real = ignore_real
        self.calls = 0
        self.part_t_ok = True

    def __call__(self, t, tokens, reals, out, info):
        self.calls += 1
        pt = info.part_t
        if pt is None or pt.shape != (len(t), 2) or out.shape[1] != 6:
            self.part_t_ok = False
            raise AssertionError("model io: part_t %r, out %r" % (pt, out.shape))
        tz, ty = pt[:, 0], pt[:, 1]
        z, y = tokens[:, 0], reals[:, 0].astype(np.float64)
        wy, V = joint_posterior(tz, ty, z, y)
        w = joint_posterior(tz, ty, z, y, True)[0] if self.ignore_real else wy
        with np.errstate(divide="ignore"):
            out[:, :4] = np.log(w)
        out[:, 4] = -np.inf
        cond = JMU[None, :] + (ty * JS * JS / V)[:, None] * (y[:, None] - ty[:, None] * JMU)
        out[:, 5] = (wy * cond).sum(axis=1)


def token_first(t):
    return (min(1.0, 2.0 * t), max(0.0, 2.0 * t - 1.0))


class TestLayout(unittest.TestCase):
    def test_gm_structs_against_the_c_compiler(self):
        cc = os.environ.get("CC", "cc")
        if not shutil.which(cc):
            self.skipTest("no C compiler")
        from dfm import _lib
        names = ["dfm_model_io", "dfm_train_args", "dfm_train_draw_args", "dfm_cond_target_io"]
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
        for c in ("OPT_GM_TIME_KIND", "OPT_GM_PART_TIMES", "GM_VELOCITY", "GM_RATES",
                  "BRANCH_UNCOND"):
            lines.append('printf("%%zu\\n", (size_t)DFM_%s);' % c)
            want.append(getattr(dfm, c))
        lines.append('printf("%llu\\n", (unsigned long long)DFM_GM_PART_SEED_MUL);')
        want.append(dfm.GM_PART_SEED_MUL)
        lines.append("return 0; }")
        with tempfile.TemporaryDirectory() as d:
            src, exe = os.path.join(d, "l.c"), os.path.join(d, "l")
            with open(src, "w") as f:
                f.write("\n".join(lines))
            subprocess.check_call([cc, "-std=c99", "-I" + os.path.join(ROOT, "include"), src,
                                   "-o", exe])
            got = [int(x) for x in subprocess.check_output([exe]).split()]
        self.assertEqual(got, want)


class TestProduct(unittest.TestCase):
    R = 20000

    def generator(self):
        pd, pc = mixture(1), affine(1)
        g = dfm.Generator.product(dfm.Generator.factorized(pd, "logits"),
                                  dfm.Generator.velocity(pc, "x1"))
        self.assertEqual((g.kind, g.n_parts, g.out_stride), (dfm.GEN_PRODUCT, 2, 6))
        self.assertEqual(g.parameterization, dfm.PARAM_MIXED)
        self.assertEqual((g.n_tokens, g.n_reals), (1, 1))
        return g

    def sample(self, model, steps, part_times=False, rows=R):
        g = self.generator()
        if part_times:
            g.set_part_time_fn(token_first)
        with dfm.Sampler(g, "exact", steps=steps, seed=1234) as s:
            res = s.run(model, rows=rows)
        self.assertEqual(model.calls, steps)          # one model call per step for both parts
        return res.tokens[:, 0], res.reals[:, 0].astype(np.float64)

    def joint_bad(self, tok, y):
        """Chi-square of the token law, per-token mean and variance of the real (4.5 standard
        errors + 0.02 for the Euler step of the real part). Returns the list of failures."""
        bad = []
        cnt = np.bincount(tok, minlength=5)
        if cnt[4]:
            bad.append("masked tokens left: %d" % cnt[4])
        st, k = chi2(cnt[:4], JPI)
        if st >= chi2_bound(k):
            bad.append("chi2 %.1f >= %.1f" % (st, chi2_bound(k)))
        for k in range(4):
            yk = y[tok == k]
            n = len(yk)
            if abs(yk.mean() - JMU[k]) > 4.5 * JS / math.sqrt(n) + 0.02:
                bad.append("token %d: mean %.4f" % (k, yk.mean()))
            if abs(yk.var() - JS * JS) > 4.5 * JS * JS * math.sqrt(2.0 / n) + 0.02:
                bad.append("token %d: var %.4f" % (k, yk.var()))
        return bad

    def test_joint_exact_posterior(self):
        tok, y = self.sample(JointModel(), 200)
        self.assertEqual(self.joint_bad(tok, y), [])

    def test_wrong_dependence_fails(self):
        # right marginals, but the token posterior ignores the real part: conditional means off
        tok, y = self.sample(JointModel(ignore_real=True), 200, rows=8000)
        self.assertTrue(any("mean" in b for b in self.joint_bad(tok, y)))

    def test_part_times_token_first(self):
        seen = []

        class M(JointModel):
            def __call__(self, t, tokens, reals, out, info):
                if self.calls in (0, 150, 300):
                    seen.append((t[0], info.part_t[0].copy()))
                JointModel.__call__(self, t, tokens, reals, out, info)
        tok, y = self.sample(M(), 400, part_times=True, rows=10000)
        self.assertEqual(self.joint_bad(tok, y), [])
        for t, pt in seen:                            # the model sees tau(t), io.t stays t
            self.assertTrue(np.allclose(pt, token_first(t)))

    def test_product_path_and_parts(self):
        pd, pc = mixture(2), affine(3)
        pp = dfm.Path.product(pd, pc)
        self.assertEqual((pp.kind, pp.n_parts, pp.n_tokens, pp.n_reals),
                         (dfm.PATH_PRODUCT, 2, 2, 3))
        self.assertEqual(pp.part(1).kind, dfm.PATH_AFFINE)
        self.assertEqual(pd.n_parts, 1)
        self.assertEqual(pd.part(0).kind, dfm.PATH_MIXTURE)
        with self.assertRaises(IndexError):
            pp.part(2)
        rows = 4000
        x1t = np.tile(np.array([[1, 2]], np.int32), (rows, 1))
        x1r = np.ones((rows, 3), np.float32)
        part_t = np.empty((rows, 2))
        part_t[:, 0], part_t[:, 1] = 0.25, 1.0
        s = pp.sample_parts(part_t, x1t, x1r)
        masked = (s.xt_tokens == MASK).mean()
        self.assertLess(abs(masked - 0.75), 4.5 * math.sqrt(0.75 * 0.25 / (2 * rows)))
        self.assertTrue(np.array_equal(s.xt_reals, x1r))                # the real part at t = 1
        s0 = pp.sample_parts(np.zeros((rows, 2)), x1t, x1r)
        self.assertTrue(np.all(s0.xt_tokens == MASK))
        self.assertTrue(np.array_equal(s0.xt_reals, s0.x0_reals))
        # without part times, every part at t; same draws as sample_parts with equal columns
        a = pp.sample(0.4, x1t, x1r, draw=3)
        b = pp.sample_parts(np.full((rows, 2), 0.4), x1t, x1r, draw=3)
        self.assertTrue(np.array_equal(a.xt_tokens, b.xt_tokens))
        self.assertTrue(np.array_equal(a.xt_reals, b.xt_reals))


def gaussian_x1(t, x, m, S):
    """E[X1 | X_t = x] = m + t S A^-1 (x - t m), A = t^2 S + (1 - t)^2 I, for X1 ~ N(m, S),
    X0 ~ N(0, I), X_t = t X1 + (1 - t) X0 (one solve per distinct time)."""
    def gain(tv):
        return tv * np.linalg.solve(tv * tv * S + (1 - tv) ** 2 * np.eye(len(m)), S)
    if np.all(t == t[0]):
        return m[None] + (x - t[0] * m[None]) @ gain(t[0])
    out = np.empty_like(x)
    for tv in np.unique(t):
        sel = t == tv
        out[sel] = m[None] + (x[sel] - tv * m[None]) @ gain(tv)
    return out


class TestSuperposition(unittest.TestCase):
    M = np.array([1.0, -0.5])
    S = np.array([[1.0, 0.6], [0.6, 0.8]])
    R = 20000

    def model(self, copies):
        def f(t, tokens, reals, out):
            x1 = gaussian_x1(t, reals.astype(np.float64), self.M, self.S)
            out[...] = np.tile(x1, (1, copies))
        return f

    def superposition(self, wsum=1.0, shared=True):
        p = affine(2)
        g = dfm.Generator.superposition([dfm.Generator.velocity(p, "x1"),
                                         dfm.Generator.diffusion(p, "x1", g=0.8)],
                                        [0.5 * wsum, 0.5 * wsum])
        self.assertEqual((g.kind, g.out_stride), (dfm.GEN_SUPERPOSITION, 4))
        if shared:
            g.set_input(1, "main", 0)
            self.assertEqual(g.out_stride, 2)
        return g

    def moments_bad(self, x):
        n = len(x)
        bad = []
        se = np.sqrt(np.diag(self.S) / n)
        if np.any(np.abs(x.mean(0) - self.M) > 5 * se + 0.02):
            bad.append("mean %s" % x.mean(0))
        c = np.cov(x.T)
        d = np.diag(self.S)
        se = np.sqrt((np.outer(d, d) + self.S ** 2) / n)
        if np.any(np.abs(c - self.S) > 5 * se + 0.03):
            bad.append("cov %s" % c.ravel())
        return bad

    def sample_reals(self, g, copies=1, rows=None):
        with dfm.Sampler(g, "euler_maruyama", steps=400, seed=99) as s:
            return s.run(self.model(copies), rows=rows or self.R).reals.astype(np.float64)

    def test_flow_plus_diffusion_gaussian(self):
        self.assertEqual(self.moments_bad(self.sample_reals(self.superposition())), [])

    def test_separate_outputs_identical_to_shared(self):
        a = self.sample_reals(self.superposition(shared=False), copies=2, rows=2000)
        b = self.sample_reals(self.superposition(), rows=2000)
        self.assertTrue(np.array_equal(a, b))

    def test_time_dependent_weights(self):
        g = self.superposition()
        g.set_weight_fn(lambda t: (t, 1.0 - t))       # flow weight grows, diffusion shrinks
        self.assertEqual(self.moments_bad(self.sample_reals(g)), [])

    def test_wrong_weights_fail(self):
        self.assertNotEqual(self.moments_bad(self.sample_reals(self.superposition(wsum=0.9))), [])

    def test_weight_fn_exceptions_and_keep_alive(self):
        g = self.superposition()

        def w(t):
            if t > 0.5:
                raise Oops("weights")
            return [0.5, 0.5]
        g.set_weight_fn(w)
        s = dfm.Sampler(g, "euler", steps=10)
        prod = dfm.Generator.product(g)             # copies the weight function
        del w
        g.close()
        gc.collect()
        x0 = np.zeros((3, 2), np.float32)
        with self.assertRaises(Oops) as cm:
            s.run(self.model(1), reals=x0)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)
        self.assertTrue(np.array_equal(x0, np.zeros((3, 2), np.float32)))
        with self.assertRaises(Oops):
            dfm.Sampler(prod, "euler", steps=10).run(self.model(1), reals=x0)
        g2 = self.superposition()
        g2.set_weight_fn(lambda t: [1.0])              # wrong count: ValueError re-raised
        with self.assertRaises(ValueError):
            dfm.Sampler(g2, "euler", steps=4).run(self.model(1), reals=x0)
        g2.set_weight_fn(lambda t: [float("nan"), 1.0])
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Sampler(g2, "euler", steps=4).run(self.model(1), reals=x0)
        self.assertEqual(cm.exception.status, dfm.ENUMERIC)
        g2.set_weight_fn(None)
        dfm.Sampler(g2, "euler", steps=4).run(self.model(1), reals=x0)


PC = np.array([0.7, 0.1, 0.1, 0.1])
PU = np.array([0.1, 0.5, 0.3, 0.1])


class TestGuidance(unittest.TestCase):
    def test_rates_clamp_count_in_progress(self):
        w, R, steps = 1.5, 5000, 50
        g = dfm.Generator.guidance(dfm.Generator.factorized(mixture(2), "logits"), None, w)
        self.assertEqual((g.branch_stride("main"), g.branch_stride(dfm.BRANCH_UNCOND)),
                         (10, 10))
        state = {"expect": None, "calls": [0, 0], "mismatch": [], "per_step": []}
        neg = ((1 + w) * PC - w * PU) < 0                       # entries the guided rate clamps

        def model(t, tokens, reals, out, info):
            state["calls"][info.branch] += 1
            p = PC if info.branch == dfm.BRANCH_MAIN else PU
            o = out.reshape(len(t), 2, 5)
            masked = tokens == MASK
            with np.errstate(divide="ignore"):
                o[...] = np.where(np.arange(5)[None, None, :] == tokens[:, :, None], 0.0,
                                  -np.inf)
                o[masked] = np.append(np.log(p), -np.inf)
            if info.branch == dfm.BRANCH_MAIN:
                state["expect"] = int(masked.sum()) * int(neg.sum())

        s = dfm.Sampler(g, "euler", steps=steps)

        def progress(step, n, t):
            c = s.step_clamped()
            state["per_step"].append(c)
            if c != state["expect"]:
                state["mismatch"].append((step, c, state["expect"]))
        tok = s.run(model, rows=R, progress=progress).tokens
        self.assertEqual(state["mismatch"], [])
        self.assertEqual(state["calls"], [steps, steps])
        self.assertEqual(len(state["per_step"]), steps)
        self.assertEqual(state["per_step"][0], 2 * R * int(neg.sum()))  # all masked at step 0
        self.assertEqual(sum(state["per_step"]), s.stat("clamped"))
        gp = np.maximum(0, (1 + w) * PC - w * PU)
        for i in range(2):
            st, k = chi2(np.bincount(tok[:, i], minlength=5)[:4], gp / gp.sum())
            self.assertLess(st, chi2_bound(k))
        with self.assertRaises(dfm.DfmError) as cm:     # not a gm sampler
            dfm.Sampler(dfm.Generator.factorized(mixture(2)), "exact", steps=2).step_clamped()
        self.assertEqual(cm.exception.status, dfm.EUNSUPPORTED)

    def test_guided_velocity(self):
        p = affine(1)
        g = dfm.Generator.guidance(dfm.Generator.velocity(p), dfm.Generator.velocity(p), 2.0)

        def model(t, tokens, reals, out, info):
            out[...] = 1.0 if info.branch == dfm.BRANCH_MAIN else -1.0
        x = dfm.Sampler(g, "euler", steps=8).run(model, reals=np.zeros((3, 1), np.float32))
        self.assertTrue(np.allclose(x.reals, 3.0 * 1.0 - 2.0 * (-1.0)))   # (1 + w) - w (-1)

    def test_forward_corrector_with_backward_generator(self):
        # (1 + c) forward - c backward of a uniform-source mixture path keeps the target law
        q = np.array([0.1, 0.4, 0.2, 0.3])
        path = mixture(1, V=4, source="uniform")
        fwd = dfm.Generator.factorized(path, "logits")
        bwd = dfm.Generator.mixture_backward(path)
        self.assertEqual(bwd.out_stride, 0)
        c = 2.0
        g = dfm.Generator.superposition([fwd, bwd], [1 + c, -c])
        self.assertEqual(g.out_stride, 4)

        def model(t, tokens, reals, out):
            lik = np.where(tokens[:, :1] == np.arange(4)[None, :], t[:, None] + (1 - t[:, None])
                           / 4, (1 - t[:, None]) / 4)
            post = q[None, :] * lik
            out[...] = np.log(post / post.sum(axis=1, keepdims=True))
        with dfm.Sampler(g, "euler", steps=200, seed=5) as s:
            x = s.run(model, rows=10000).tokens[:, 0]
        st, k = chi2(np.bincount(x, minlength=4), q)
        self.assertLess(st, chi2_bound(k))
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Sampler(bwd, "euler")
        self.assertEqual(cm.exception.status, dfm.EUNSUPPORTED)


class Linear:
    """A deterministic model: out = tanh(features(t, x_t) @ W), W fixed."""

    def __init__(self, stride, seed=0):
        self.W = np.random.default_rng(seed).normal(size=(6, stride)) * 0.3
        self.seen = []

    def features(self, t, tokens, reals, part_t):
        f = np.zeros((len(t), 6))
        f[:, 0] = t
        f[:, 1:3] = tokens / 4.0
        f[:, 3:5] = reals
        f[:, 5] = part_t[:, -1]
        return f

    def __call__(self, t, tokens, reals, out, info):
        self.seen.append((t.copy(), tokens.copy(), reals.copy(), info.part_t.copy()))
        out[...] = np.tanh(self.features(t, tokens, reals, info.part_t) @ self.W)


class TestTrainer(unittest.TestCase):
    rows = 64

    def setUp(self):
        rng = np.random.default_rng(3)
        self.x1t = rng.integers(0, 4, size=(self.rows, 2)).astype(np.int32)
        self.x1r = rng.normal(size=(self.rows, 2)).astype(np.float32)
        self.pd, self.pc = mixture(2), affine(2)
        self.path = dfm.Path.product(self.pd, self.pc)
        self.loss = dfm.Loss.product(self.path, [dfm.Loss.generalized_kl(self.pd),
                                                 dfm.Loss.mse(dfm.Generator.velocity(self.pc))],
                                     [0.7, 1.3])
        self.assertEqual((self.loss.kind, self.loss.out_stride, self.loss.n_parts),
                         (dfm.LOSS_PRODUCT, 12, 2))

    def trainer(self, **kw):
        kw.setdefault("seed", 11)
        return dfm.Trainer(self.path, self.loss, part_times=True, time_kind="logit_normal", **kw)

    def test_step_matches_eval_parts(self):
        tr = self.trainer()
        self.assertEqual((tr.n_times, tr.get_option("time_kind"), tr.get_option("part_times")),
                         (2, dfm.TIME_LOGIT_NORMAL, 1))
        for _ in range(2):
            s0 = tr.step_count
            d = tr.draw(self.x1t, self.x1r)
            self.assertEqual(tr.step_count, s0)        # draw does not advance the counter
            model = Linear(12)
            grads = []
            res = tr.step(model, lambda t, tk, rl, out, g: grads.append((out.copy(), g.copy())),
                          self.x1t, self.x1r)
            self.assertEqual(tr.step_count, s0 + 1)
            t, xt_t, xt_r, part_t = model.seen[0]
            self.assertTrue(np.array_equal(t, d.t))
            self.assertTrue(np.array_equal(part_t, d.part_t))
            self.assertTrue(np.array_equal(res.t, d.part_t))
            self.assertTrue(np.array_equal(xt_t, d.xt_tokens))
            self.assertTrue(np.array_equal(xt_r, d.xt_reals))
            self.assertFalse(np.array_equal(part_t[:, 0], part_t[:, 1]))   # own time per part
            out, grad = grads[0]
            ref = self.loss.eval_parts(out, d.t, d.part_t, x1_tokens=self.x1t,
                                       xt_tokens=d.xt_tokens, x0_reals=d.x0_reals,
                                       x1_reals=self.x1r, xt_reals=d.xt_reals)
            self.assertEqual(res.loss, ref.loss)
            self.assertTrue(np.array_equal(grad, ref.grad))
            self.assertTrue(math.isfinite(res.loss) and res.loss > 0)
        # eval_parts with other part times gives another loss
        other = self.loss.eval_parts(out, d.t, np.ascontiguousarray(d.part_t[:, ::-1]),
                                     x1_tokens=self.x1t, xt_tokens=d.xt_tokens,
                                     x0_reals=d.x0_reals, x1_reals=self.x1r, xt_reals=d.xt_reals)
        self.assertNotEqual(other.loss, ref.loss)

    def run_steps(self, threads, n=3):
        tr = self.trainer(threads=threads)
        out = []
        for _ in range(n):
            g = []
            r = tr.step(Linear(12), lambda t, tk, rl, o, gr: g.append(gr.copy()), self.x1t,
                        self.x1r)
            out.append((r.loss, r.t, g[0]))
        return out

    def test_reproducible_one_seed(self):
        a, b, c = self.run_steps(1), self.run_steps(1), self.run_steps(2)
        for x, y, z in zip(a, b, c):
            self.assertEqual(x[0], y[0])
            self.assertEqual(x[0], z[0])
            for i in (1, 2):
                self.assertTrue(np.array_equal(x[i], y[i]) and np.array_equal(x[i], z[i]))
        self.assertNotEqual(a[0][0], a[1][0])         # the counter moves the draws
        tr = self.trainer()
        tr.step_count = 1                              # redo step 1
        self.assertEqual(tr.step(Linear(12), None, self.x1t, self.x1r).loss, a[1][0])

    def test_backward_and_forward_exceptions(self):
        tr = self.trainer()

        def bad_backward(t, tokens, reals, out, grad, info):
            self.assertEqual(info.step, -1)
            raise Oops("backward")
        with self.assertRaises(Oops) as cm:
            tr.step(Linear(12), bad_backward, self.x1t, self.x1r)
        self.assertIsInstance(cm.exception.__cause__, dfm.DfmError)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)
        self.assertIn("backward", cm.exception.__cause__.message)
        self.assertEqual(tr.step_count, 0)            # nothing taken

        def bad_forward(t, tokens, reals, out):
            raise KeyboardInterrupt
        with self.assertRaises(KeyboardInterrupt):
            tr.step(bad_forward, None, self.x1t, self.x1r)
        with self.assertRaises(ValueError):           # wrong shape written into out
            tr.step(lambda t, tk, rl, out: np.zeros((1, 3)), None, self.x1t, self.x1r)

        def nan_forward(t, tokens, reals, out):
            out[...] = np.nan
        with self.assertRaises(dfm.DfmError) as cm:
            tr.step(nan_forward, None, self.x1t, self.x1r)
        self.assertEqual(cm.exception.status, dfm.ENUMERIC)
        self.assertEqual(tr.step_count, 0)
        tr.step(Linear(12), None, self.x1t, self.x1r)  # still works
        self.assertEqual(tr.step_count, 1)

    def test_bad_input(self):
        tr = self.trainer()
        with self.assertRaises(TypeError):
            tr.step(Linear(12), None, self.x1t.astype(np.float32), self.x1r)
        with self.assertRaises(ValueError):
            tr.step(Linear(12), None, self.x1t, self.x1r[:3])
        with self.assertRaises(TypeError):
            tr.step(Linear(12), None, None, self.x1r)
        with self.assertRaises(TypeError):
            tr.step("not callable", None, self.x1t, self.x1r)
        with self.assertRaises(ValueError):
            tr.set_option("time_kind", "gaussian")
        with self.assertRaises(dfm.DfmError) as cm:
            tr.set_option("time_eps", 1.5)
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(dfm.DfmError) as cm:     # a loss that does not fit the path
            dfm.Trainer(self.pd, self.loss)
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(dfm.DfmError) as cm:     # part loss on the wrong part
            dfm.Loss.product(self.path, [dfm.Loss.mse(dfm.Generator.velocity(self.pc)),
                                         dfm.Loss.generalized_kl(self.pd)])
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        out = np.zeros((self.rows, 12), np.float32)
        t = np.full(self.rows, 0.5)
        with self.assertRaises(ValueError):              # part_t of the wrong shape, before C
            self.loss.eval_parts(out, t, np.full((self.rows, 3), 0.5), x1_tokens=self.x1t)
        d = tr.draw(self.x1t, self.x1r)
        with self.assertRaises(dfm.DfmError) as cm:
            self.loss.eval_parts(out, t, np.full((self.rows, 2), 1.5), x1_tokens=self.x1t,
                                 xt_tokens=d.xt_tokens, x0_reals=d.x0_reals, x1_reals=self.x1r,
                                 xt_reals=d.xt_reals)
        self.assertEqual(cm.exception.status, dfm.ERANGE)
        tr.close()
        with self.assertRaises(ValueError):
            tr.step(Linear(12), None, self.x1t, self.x1r)


class TestGmLoss(unittest.TestCase):
    def test_velocity_target_in_trainer_matches_mse(self):
        path = affine(2)
        x1 = np.random.default_rng(1).normal(size=(32, 2)).astype(np.float32)
        calls = []

        def target(io):
            calls.append(io.target.shape)
            return io.x1_reals - io.x0_reals           # CondOT conditional velocity
        gm = dfm.Loss.gm(path.space, "velocity", target)
        mse = dfm.Loss.mse(dfm.Generator.velocity(path))
        self.assertEqual((gm.kind, gm.out_stride), (dfm.LOSS_MSE, 2))
        res = []
        for loss in (gm, mse):
            g = []
            tr = dfm.Trainer(path, loss, seed=4)
            r = tr.step(lambda t, tk, rl, out: rl * 0.5 + t[:, None],
                        lambda t, tk, rl, out, gr: g.append(gr.copy()), None, x1)
            res.append((r.loss, g[0]))
        self.assertEqual(calls, [(32, 2)])
        self.assertAlmostEqual(res[0][0], res[1][0], places=5)
        self.assertTrue(np.allclose(res[0][1], res[1][1], rtol=1e-5, atol=1e-6))

        def bad(io):
            raise Oops("target")
        tr = dfm.Trainer(path, dfm.Loss.gm(path.space, dfm.GM_VELOCITY, bad))
        with self.assertRaises(Oops) as cm:
            tr.step(lambda t, tk, rl, out: rl, None, None, x1)
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)

    def test_rates_bregman_against_formula(self):
        space = dfm.Space.discrete(3, 2)
        rng = np.random.default_rng(2)
        rows = 5
        tgt = rng.uniform(0.1, 2.0, size=(rows, 6)).astype(np.float32)
        loss = dfm.Loss.gm(space, "rates", lambda io: tgt)
        loss.reduction = "sum"
        self.assertEqual((loss.kind, loss.out_stride), (dfm.LOSS_BREGMAN_RATES, 6))
        xt = rng.integers(0, 3, size=(rows, 2)).astype(np.int32)
        x1 = rng.integers(0, 3, size=(rows, 2)).astype(np.int32)
        out = rng.uniform(0.1, 2.0, size=(rows, 6)).astype(np.float32)
        r = loss.eval(out, np.full(rows, 0.3), x1_tokens=x1, xt_tokens=xt)
        a, b = tgt.astype(np.float64).reshape(rows, 2, 3), out.astype(np.float64).reshape(
            rows, 2, 3)
        off = np.arange(3)[None, None, :] != xt[:, :, None]
        want = np.sum(np.where(off, a * np.log(a / b) - a + b, 0.0))
        self.assertAlmostEqual(r.loss, want, places=4)
        self.assertTrue(np.allclose(r.grad.reshape(rows, 2, 3), np.where(off, 1 - a / b, 0),
                                    atol=1e-5))
        with self.assertRaises(TypeError):
            dfm.Loss.gm(space, "rates", None)
        with self.assertRaises(ValueError):
            dfm.Loss.gm(space, "score", lambda io: None)
        with self.assertRaises(dfm.DfmError) as cm:      # rates on a Euclidean space
            dfm.Loss.gm(dfm.Space.euclidean(2), "rates", lambda io: None)
        self.assertEqual(cm.exception.status, dfm.EINVAL)


class TestBadInput(unittest.TestCase):
    def test_creators_and_setters(self):
        pd, pc = mixture(1), affine(1)
        gd, gc = dfm.Generator.factorized(pd), dfm.Generator.velocity(pc)
        with self.assertRaises(TypeError):
            dfm.Path.product(pd, "x")
        with self.assertRaises(TypeError):
            dfm.Generator.product(gd, pd)
        with self.assertRaises(dfm.DfmError) as cm:       # mixed modalities
            dfm.Generator.superposition([gd, gc])
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Generator.superposition([gc, gc], [float("nan"), 1.0])
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(ValueError):               # weight count checked before C
            dfm.Generator.superposition([gc, gc], [1.0])
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Generator.product(gd, dfm.Generator.rate_matrix(space=dfm.Space.discrete(3, 1),
                                                                param="rates"))
        self.assertEqual(cm.exception.status, dfm.EUNSUPPORTED)
        sup = dfm.Generator.superposition([gc, gc])
        with self.assertRaises(dfm.DfmError) as cm:
            sup.set_input(1, 7)
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(ValueError):
            sup.set_input(1, "sideways")
        with self.assertRaises(dfm.DfmError) as cm:
            sup.set_input(0, "main", 1)                   # share with a later component
        self.assertEqual(cm.exception.status, dfm.EINVAL)
        with self.assertRaises(dfm.DfmError) as cm:
            gc.set_weight_fn(lambda t: [1.0])
        self.assertEqual(cm.exception.status, dfm.EUNSUPPORTED)
        with self.assertRaises(dfm.DfmError) as cm:
            gc.set_part_time_fn(token_first)
        self.assertEqual(cm.exception.status, dfm.EUNSUPPORTED)
        self.assertEqual((gc.n_parts, sup.branch_stride("uncond")), (1, 0))

    def test_part_clock_errors(self):
        g = dfm.Generator.product(dfm.Generator.factorized(mixture(1)),
                                  dfm.Generator.velocity(affine(1), "x1"))
        x = (np.full((4, 1), MASK, np.int32), np.zeros((4, 1), np.float32))
        g.set_part_time_fn(lambda t: (1.0 - t, t))         # part 0 runs backwards
        with self.assertRaises(dfm.DfmError) as cm:
            dfm.Sampler(g, "exact", steps=4).run(JointModel(), *x)
        self.assertEqual(cm.exception.status, dfm.EINVAL)

        def late(t):
            if t > 0.3:
                raise Oops("clock")
            return (t, t)
        g.set_part_time_fn(late)
        with self.assertRaises(Oops):
            dfm.Sampler(g, "exact", steps=4).run(JointModel(), *x)
        self.assertTrue(np.all(x[0] == MASK))               # start states untouched
        g.set_part_time_fn(None)
        dfm.Sampler(g, "exact", steps=4).run(JointModel(), *x)


if __name__ == "__main__":
    unittest.main()
