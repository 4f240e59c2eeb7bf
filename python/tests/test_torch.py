"""PyTorch CPU tensors through the package: inputs read in place (no copy) when they have the
C type and are contiguous, converted copies otherwise (documented), outputs written into the
caller's tensor, models that use torch.from_numpy / return tensors. Skipped without torch."""
import unittest
import warnings

from _common import np, dfm

from dfm import _util

try:
    import torch
except ImportError as e:          # python3-torch is optional
    torch = None
    WHY = "torch is not importable (%s): apt-get install python3-torch" % e

V, D = 4, 3


def setUpModule():
    if torch is None:
        print("\ntest_torch: skipped: " + WHY)
        raise unittest.SkipTest(WHY)


class DlpackOnly:
    """An object offering only DLPack (as JAX or CuPy CPU arrays do)."""

    def __init__(self, t):
        self.t = t

    def __dlpack__(self, stream=None):
        return self.t.__dlpack__()

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


class TestTensorInputs(unittest.TestCase):
    def setUp(self):
        self.path = dfm.Path.mixture(dfm.Space.discrete(V, D), dfm.Scheduler.condot(), "mask")
        self.loss = dfm.Loss.generalized_kl(self.path)
        g = torch.Generator().manual_seed(0)
        self.x1 = torch.randint(0, V - 1, (6, D), generator=g)           # int64, as torch makes
        self.t = torch.linspace(0.1, 0.9, 6)                             # float32
        self.xt = torch.from_numpy(self.path.sample(self.t, self.x1).xt_tokens)
        self.logits = torch.randn(6, D, V, generator=g)
        self.ref = self.loss.eval(self.logits.numpy(), self.t.numpy().astype(np.float64),
                                  x1_tokens=self.x1.numpy().astype(np.int32),
                                  xt_tokens=self.xt.numpy())

    def test_no_copy_for_matching_tensors(self):
        for t, dt in ((self.logits, _util.F32), (self.xt, _util.I32),
                      (torch.zeros(4, dtype=torch.float64), _util.F64)):
            a = _util.arr(t, dt, None, "x")
            self.assertEqual(a.ctypes.data, t.data_ptr())                 # the tensor's memory
        a = _util.arr(DlpackOnly(self.logits), _util.F32, None, "x")
        self.assertEqual(a.ctypes.data, self.logits.data_ptr())
        # converted (a new array): int64 tokens, float32 times, non-contiguous tensors
        for t, dt in ((self.x1, _util.I32), (self.t, _util.F64),
                      (self.logits.transpose(1, 2), _util.F32)):
            a = _util.arr(t, dt, None, "x")
            self.assertNotEqual(a.ctypes.data, t.data_ptr())
            self.assertTrue(np.array_equal(a, t.numpy().astype(dt)))

    def test_loss_with_tensors(self):
        r = self.loss.eval(self.logits, self.t, x1_tokens=self.x1, xt_tokens=self.xt)
        self.assertEqual(r.loss, self.ref.loss)
        self.assertTrue(np.array_equal(r.grad, self.ref.grad))
        self.assertEqual(r.grad.shape, (6, D, V))
        flat = self.loss.eval(self.logits.reshape(6, D * V), self.t, x1_tokens=self.x1,
                              xt_tokens=self.xt)
        self.assertEqual(flat.loss, self.ref.loss)
        g = torch.full((6, D, V), float("nan"))
        r = self.loss.eval(self.logits, self.t, x1_tokens=self.x1, xt_tokens=self.xt, grad=g)
        self.assertIs(r.grad, g)                                       # landed in the tensor
        self.assertTrue(torch.equal(g, torch.from_numpy(self.ref.grad)))

    def test_refused_tensors(self):
        w = self.logits.clone().requires_grad_()
        with self.assertRaises(TypeError) as cm:
            self.loss.eval(w, self.t, x1_tokens=self.x1, xt_tokens=self.xt)
        self.assertIn("detach", str(cm.exception))
        with self.assertRaises(TypeError) as cm:
            self.loss.eval(self.logits.double(), self.t, x1_tokens=self.x1, xt_tokens=self.xt)
        self.assertIn("tensor.float()", str(cm.exception))
        with self.assertRaises(TypeError):
            self.path.sample(self.t, self.x1.float())                 # floats are not tokens
        big = torch.zeros(6, D, 2 * V)
        with self.assertRaises(ValueError):                            # would land in a copy
            self.loss.eval(self.logits, self.t, x1_tokens=self.x1, xt_tokens=self.xt,
                           grad=big[:, :, ::2])
        self.assertFalse(big.any())
        with self.assertRaises(ValueError):                            # read-only DLPack view
            self.loss.eval(self.logits, self.t, x1_tokens=self.x1, xt_tokens=self.xt,
                           grad=DlpackOnly(torch.zeros(6, D, V)))
        with self.assertRaises(TypeError):
            self.loss.eval(self.logits, self.t, x1_tokens=self.x1, xt_tokens=self.xt,
                           grad=torch.zeros(6, D, V, dtype=torch.float64))
        x = self.x1.clone()
        x[1, 2] = 1 << 40
        with self.assertRaises(dfm.DfmError) as cm:
            self.path.sample(self.t, x)
        self.assertEqual(cm.exception.message, "x1_tokens[row 1][coord 2] = 1099511627776 is "
                         "outside the int32 range of tokens")

    def test_fill_into_tensor(self):
        out = torch.zeros(3, 5)
        self.assertIs(dfm.rng.fill(3, 5, 7, out=out), out)
        self.assertTrue(np.array_equal(out.numpy(), dfm.rng.fill(3, 5, 7)))

    def test_seed_from_tensor_scalar(self):
        s = dfm.Sampler(dfm.Generator.factorized(self.path), "exact", steps=2)
        s.seed = torch.tensor(12)
        self.assertEqual(s.seed, 12)
        with self.assertRaises(TypeError):
            s.seed = torch.tensor(1.5)


class TestTorchModels(unittest.TestCase):
    def test_model_uses_from_numpy_and_returns_tensors(self):
        path = dfm.Path.mixture(dfm.Space.discrete(V, D), dfm.Scheduler.condot(), "mask")
        s = dfm.Sampler(dfm.Generator.factorized(path), "exact", steps=5, seed=3)
        emb = torch.nn.Embedding(V, V)
        torch.nn.init.normal_(emb.weight)
        seen = []

        def model(t, tokens, reals, out):
            tk = torch.from_numpy(tokens)                  # writable copy: no warning
            tt = torch.from_numpy(t)
            o = torch.from_numpy(out)                      # libdfm's buffer, (rows, d, V)
            seen.append(o.shape)
            with torch.no_grad():
                o.copy_(emb(tk.long()) + tt[:, None, None].float())
                o[:, :, V - 1] = -30.0

        def model_ret(t, tokens, reals, out):
            with torch.no_grad():
                r = emb(torch.from_numpy(tokens).long()) + torch.from_numpy(t)[:, None, None]
                r[:, :, V - 1] = -30.0
                return r.float()                           # (rows, d, V) tensor

        with warnings.catch_warnings():
            warnings.simplefilter("error")                 # torch's non-writable warning
            a = s.run(model, rows=32, out_shape="3d").tokens
            b = s.run(model_ret, rows=32).tokens
        self.assertEqual(seen[0], (32, D, V))
        self.assertTrue(np.array_equal(a, b))
        self.assertTrue((a < V - 1).all())

        def model_grad(t, tokens, reals, out):
            return emb(torch.from_numpy(tokens).long())    # requires grad: refused clearly
        with self.assertRaises(TypeError) as cm:
            s.run(model_grad, rows=4)
        self.assertIn("detach", str(cm.exception))
        self.assertEqual(cm.exception.__cause__.status, dfm.ECALLBACK)


if __name__ == "__main__":
    unittest.main()
