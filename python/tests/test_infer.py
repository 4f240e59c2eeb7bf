"""Discrete inference options from Python: unmasking orders and counts, shaping, remasking,
tau-leaping and theta-trapezoidal, time-independent models (fewer model calls, row_index), the
step callback, and the errors of bad values."""
import unittest

from _common import np, dfm, chi2, chi2_bound

V, D, MASK = 4, 3, 3          # [3]^3 data with a mask token
X1 = np.array([[a, b, c] for a in range(3) for b in range(3) for c in range(3)], np.int32)
W = 0.2 + ((X1[:, 0] + 2 * X1[:, 1] + X1[:, 0] * X1[:, 2]) % 5) + 3.0 * (X1[:, 0] == X1[:, 1])
Q = W / W.sum()


def mask_model(t, tokens, reals, out, info):
    """The exact posterior of the mask source: q given the revealed positions (no t)."""
    known = tokens != MASK                                            # (rows, D)
    ok = np.all(~known[:, None, :] | (X1[None, :, :] == tokens[:, None, :]), axis=2)
    w = ok * Q[None, :]                                               # (rows, 27)
    post = w / w.sum(axis=1, keepdims=True)
    for i in range(D):
        p = post @ np.eye(3)[X1[:, i]]                                # (rows, 3)
        with np.errstate(divide="ignore"):
            out[:, i * V:i * V + 3] = np.log(p)
        out[:, i * V + 3] = -np.inf
    mask_model.rows += tokens.shape[0]
    mask_model.indexed |= info.row_index is not None


mask_model.rows = 0
mask_model.indexed = False


def sampler(method="exact", steps=16, **options):
    space = dfm.Space.discrete(V, D)
    path = dfm.Path.mixture(space, dfm.Scheduler.condot(), "mask", mask_token=MASK)
    gen = dfm.Generator.factorized(path, "logits")
    return dfm.Sampler(gen, method, steps=steps, seed=7, **options)


def hist(tok):
    return np.bincount(tok[:, 0] * 9 + tok[:, 1] * 3 + tok[:, 2], minlength=27)


class TestUnmasking(unittest.TestCase):
    def test_random_order_one_per_step_is_exact(self):
        s = sampler(steps=5, count="schedule_ceil")
        self.assertEqual(s.get_option("count"), dfm.constants.COUNT_SCHEDULE_CEIL)
        r = s.run(mask_model, rows=20000)
        st, k = chi2(hist(r.tokens), Q)
        self.assertLess(st, chi2_bound(k))

    def test_orders_counts_blocks_reproducible(self):
        for order in ("confidence", "margin", "entropy"):
            for count in ("coins", "schedule", "threshold"):
                s = sampler(order=order, count=count, block_len=2, threshold=0.6, top_p=0.9)
                a = s.run(mask_model, rows=64).tokens
                s.threads = 2
                s.configure(chunk_rows=5)
                b = s.run(mask_model, rows=64).tokens
                np.testing.assert_array_equal(a, b)
                self.assertTrue(np.all(a < 3))

    def test_greedy_and_shaping(self):
        s = sampler(order="confidence", greedy=1, top_k=2, min_p=0.1)
        self.assertEqual(s.get_option("top_k"), 2)
        r = s.run(mask_model, rows=100)
        self.assertTrue(np.all(r.tokens < 3))


class TestRemaskingAndLeaping(unittest.TestCase):
    def test_remask_schedules(self):
        for remask in ("cap", "rescale", "loop"):
            s = sampler(steps=100, remask=remask, remask_eta=0.02, loop_start=0.3, loop_end=0.7,
                        loop_kappa=0.6)
            r = s.run(mask_model, rows=5000)
            st, k = chi2(hist(r.tokens), Q)
            self.assertLess(st, chi2_bound(k), remask)
            self.assertGreater(s.stat("jumps"), 3 * 5000)

    def test_theta_trapezoidal_two_calls_per_step(self):
        s = sampler("theta_trapezoidal", steps=8, theta=0.4)
        self.assertAlmostEqual(s.get_option("theta"), 0.4)
        r = s.run(mask_model, rows=50)
        self.assertTrue(np.all(r.tokens < 3))
        self.assertEqual(s.stat("model_calls"), 2 * 7 + 1)   # the last step draws from p
        s2 = sampler("tau_leaping", steps=8)
        s2.run(mask_model, rows=50)
        self.assertEqual(s2.stat("model_calls"), 8)


class TestFewerCalls(unittest.TestCase):
    def test_time_independent_same_samples_fewer_rows(self):
        s = sampler(steps=32)
        mask_model.rows = 0
        a = s.run(mask_model, rows=500).tokens
        full = mask_model.rows
        self.assertEqual(s.stat("model_rows"), full)
        s.set_option("time_independent", 1)
        mask_model.rows, mask_model.indexed = 0, False
        b = s.run(mask_model, rows=500).tokens
        np.testing.assert_array_equal(a, b)
        self.assertEqual(s.stat("model_rows"), mask_model.rows)
        self.assertLess(mask_model.rows, full / 3)
        self.assertTrue(mask_model.indexed)


class TestStepCallback(unittest.TestCase):
    def test_sees_tokens_and_stops(self):
        s = sampler(steps=6)
        seen = []
        s.set_step_callback(lambda v: seen.append((v.step, v.tokens.copy(), v.changed)))
        r = s.run(mask_model, rows=10)
        self.assertEqual([v[0] for v in seen], list(range(6)))
        np.testing.assert_array_equal(seen[-1][1], r.tokens)
        self.assertEqual(sum(v[2] for v in seen), s.stat("jumps"))
        s.set_step_callback(lambda v: v.step == 2)
        with self.assertRaises(dfm.DfmError) as cm:
            s.run(mask_model, rows=10)
        self.assertEqual(cm.exception.status, dfm.constants.ESTOPPED)
        self.assertEqual(s.stat("steps"), 3)

        def boom(v):
            raise KeyError("from the step callback")
        s.set_step_callback(boom)
        with self.assertRaises(KeyError):
            s.run(mask_model, rows=10)
        s.set_step_callback(None)
        s.run(mask_model, rows=10)


class TestBadValues(unittest.TestCase):
    def test_errors(self):
        s = sampler()
        for name, value in (("order", 9), ("count", -1), ("top_p", 0.0), ("min_p", 1.5),
                            ("threshold", 2.0), ("remask_eta", -0.5), ("loop_kappa", 1.0),
                            ("block_len", -1), ("time_independent", 3)):
            with self.assertRaises(dfm.DfmError) as cm:
                s.set_option(name, value)
            self.assertEqual(cm.exception.status, dfm.constants.EINVAL, name)
        with self.assertRaises(ValueError):
            s.set_option("order", "sideways")
        with self.assertRaises(dfm.DfmError):
            s.set_option("theta", 0.5)                       # not a trapezoidal sampler
        u = dfm.Sampler(dfm.Generator.factorized(dfm.Path.mixture(
            dfm.Space.discrete(3, 2), dfm.Scheduler.condot(), "uniform"), "logits"), "exact")
        with self.assertRaises(dfm.DfmError):
            u.set_option("order", "confidence")             # needs a mask source


if __name__ == "__main__":
    unittest.main()
