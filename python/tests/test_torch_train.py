"""A torch.nn model trained through the package, then sampled by it (docs/python.md, "Training a
PyTorch model"): masked discrete flow matching on [4]^3 (a mask token makes the vocabulary 5)
towards a known, strongly correlated distribution q. Each step draws x1 ~ q, t with
dfm.time_sample, x_t with path.sample, runs the network, evaluates the cross-entropy loss with
dfm (gradient written into a preallocated tensor) and calls logits.backward(grad). The trained
network then drives the exact sampler; the total-variation distance of 20,000 samples to q must
be below 0.06. Reference figures of the same run (seed fixed, one thread): the sampler with
the exact posterior as its model (the floor that sampling noise sets), the untrained network,
and q's product of marginals (what a model that ignores correlations reaches).
Skipped (with the reason printed) when torch cannot be imported."""
import time
import unittest

from _common import np, dfm

try:
    import torch
except ImportError as e:
    torch = None
    WHY = "torch is not importable (%s): apt-get install python3-torch" % e

VD, D = 4, 3              # data values 0..3 at 3 positions
V = VD + 1                # + the mask token 4
STEPS, BATCH, HIDDEN, LR = 800, 512, 128, 3e-3
ROWS, SAMPLE_STEPS = 20000, 32
TV_BOUND = 0.06


def setUpModule():
    if torch is None:
        print("\ntest_torch_train: skipped: " + WHY)
        raise unittest.SkipTest(WHY)


def target():
    """q on [4]^3: random log-weights (seeded) times 8 where x2 = x0 + x1 (mod 4)."""
    rng = np.random.default_rng(7)
    X = np.array(np.meshgrid(*[np.arange(VD)] * D, indexing="ij")).reshape(D, -1).T
    w = rng.normal(size=len(X)) + np.where(X[:, 2] == (X[:, 0] + X[:, 1]) % VD, np.log(8.0), 0)
    q = np.exp(w)
    return X, q / q.sum()


def tv(samples, q):
    idx = (samples.astype(np.int64) * VD ** np.arange(D)[::-1]).sum(1)
    if (samples >= VD).any():
        return 1.0                       # a mask token left: not a sample of q at all
    return 0.5 * np.abs(np.bincount(idx, minlength=len(q)) / len(samples) - q).sum()


if torch is not None:
    class Denoiser(torch.nn.Module):
        """Posterior logits (rows, D, V) of x1 given x_t and t: an MLP on the one-hot state and
        t; the mask token's logit is pinned low (x1 never is the mask)."""

        def __init__(self):
            super().__init__()
            self.f = torch.nn.Sequential(
                torch.nn.Linear(D * V + 1, HIDDEN), torch.nn.SiLU(),
                torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.SiLU(), torch.nn.Linear(HIDDEN, D * V))

        def forward(self, xt, t):
            x = torch.nn.functional.one_hot(xt.long(), V).float().reshape(len(xt), -1)
            o = self.f(torch.cat([x, t[:, None].float()], 1)).reshape(-1, D, V)
            return torch.cat([o[:, :, :VD], torch.full_like(o[:, :, VD:], -1e4)], 2)


class TestTrainTorchModel(unittest.TestCase):
    def test_train_and_sample(self):
        torch.set_num_threads(1)
        torch.manual_seed(0)
        X, q = target()
        space = dfm.Space.discrete(V, D)
        path = dfm.Path.mixture(space, dfm.Scheduler.condot(), "mask")      # mask token V - 1
        loss = dfm.Loss.cross_entropy(path)
        gen = dfm.Generator.factorized(path, "logits")
        net = Denoiser()

        def sample(model):
            s = dfm.Sampler(gen, "exact", steps=SAMPLE_STEPS, seed=1)
            return s.run(model, rows=ROWS, out_shape="3d").tokens

        def net_model(t, tokens, reals, out):          # out: libdfm's (rows, D, V) buffer
            with torch.no_grad():
                torch.from_numpy(out).copy_(net(torch.from_numpy(tokens), torch.from_numpy(t)))

        def exact_model(t, tokens, reals, out):        # the true posterior (mask source)
            agree = np.all((tokens[:, None, :] == X[None]) | (tokens[:, None, :] == VD), axis=2)
            post = agree * q[None]
            post /= post.sum(1, keepdims=True)
            p = np.stack([post @ np.eye(VD)[X[:, i]] for i in range(D)], 1)
            out[:, :, :VD] = np.log(np.maximum(p, 1e-30))
            out[:, :, VD] = -1e4

        tv_untrained = tv(sample(net_model), q)

        opt = torch.optim.Adam(net.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
        grad = torch.empty(BATCH, D, V)
        data = np.random.default_rng(1)
        t0 = time.time()
        for k in range(STEPS):
            x1 = torch.from_numpy(X[data.choice(len(q), BATCH, p=q)])             # int64
            t = dfm.time_sample(BATCH, seed=2, draw=k, eps=1e-3)
            xt = path.sample(t, x1, draw=k).xt_tokens
            logits = net(torch.from_numpy(xt), torch.from_numpy(t))
            r = loss.eval(logits.detach(), t, x1_tokens=x1, xt_tokens=xt, grad=grad)
            opt.zero_grad()
            logits.backward(grad)
            opt.step()
            sched.step()
        train_s = time.time() - t0
        t0 = time.time()
        tv_trained = tv(sample(net_model), q)
        sample_s = time.time() - t0
        tv_exact = tv(sample(exact_model), q)
        marg = [q.reshape((VD,) * D).sum(axis=tuple(j for j in range(D) if j != i))
                for i in range(D)]
        tv_marg = 0.5 * np.abs(np.einsum("i,j,k->ijk", *marg).reshape(-1) - q).sum()
        # E[TV] of an exact sample of ROWS draws: 0.5 sum sqrt(2 q (1 - q) / (pi ROWS))
        floor = 0.5 * np.sum(np.sqrt(2 * q * (1 - q) / (np.pi * ROWS)))
        print("\ntorch training: TV to q %.4f (bound %.2f; exact posterior %.4f, expected "
              "sampling noise %.4f, untrained %.3f, product of marginals %.3f), final loss "
              "%.4f; %d steps of %d rows in %.1f s, %d samples x %d steps in %.1f s"
              % (tv_trained, TV_BOUND, tv_exact, floor, tv_untrained, tv_marg, r.loss, STEPS,
                 BATCH, train_s, ROWS, SAMPLE_STEPS, sample_s))
        self.assertLess(tv_exact, 2 * floor)           # the sampler itself is right
        self.assertGreater(tv_untrained, 0.3)          # the measure can fail
        self.assertGreater(tv_marg, 0.3)
        self.assertLess(tv_trained, TV_BOUND)


if __name__ == "__main__":
    unittest.main()
