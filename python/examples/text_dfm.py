"""text_dfm.py: a character-level masked diffusion transformer in PyTorch (torch.nn), trained and
sampled through libdfm's Python package: the Python twin of examples/text_dfm.cpp (without its
autoregressive baseline). See docs/examples_text.md.

Data: Debian's fortunes (/usr/share/games/fortunes), whitespace collapsed, one fortune per line,
every tenth fortune held out; characters of the training text plus a mask token.
Flow: mixture path from the all-mask source, kappa_t = t. dfm.Trainer.step draws t and x_t,
evaluates the generalized-KL loss (the ELBO) and hands its gradient wrt the logits to
backward(), which calls logits.backward(grad). The network's last layer writes the logits
straight into libdfm's output buffer (LinearInto), so no logits copy is made.
Report: held-out negative ELBO in bits per character (Loss.elbo), samples of the exact step and
of the confidence order with the even split, their valid-word rate (/usr/share/dict/words) and distinct-2, the share of a
training step spent inside libdfm, and a `result:` line.

Usage: python3 python/examples/text_dfm.py [--help]; --check also compares libdfm's gradient
with torch's own cross-entropy gradient on one batch (the test in make check uses it).
"""
import argparse
import math
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the package in this tree (python/dfm)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dfm  # noqa: E402


def load_corpus(directory):
    """(train text, held-out text): fortunes with whitespace collapsed, one per line; fortune
    k (in file-name order, pictures left out) is held out when k % 10 == 9."""
    train, held, k = [], [], 0
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if "." in name or name in ("art", "ascii-art") or not os.path.isfile(path):
            continue
        raw = open(path, "rb").read().decode("ascii", "ignore")
        for f in re.split(r"\n%\n", "\n" + raw + "\n"):
            f = re.sub(r".\x08", "", f)  # overstrikes
            f = " ".join("".join(c for c in f if " " <= c <= "~" or c in "\t\n\r").split())
            if f:
                (held if k % 10 == 9 else train).append(f)
                k += 1
    return "\n".join(train) + "\n", "\n".join(held) + "\n"


def valid_word(words, w):
    """In the dictionary as written, or in lower case when written capitalized / in capitals;
    single letters only as a, A, I (see examples/text_dfm.cpp)."""
    if len(w) == 1:
        return w in ("a", "A", "I")
    if w in words:
        return True
    rest = w[1:]
    if w[0].isupper() and rest == rest.lower():
        return w.lower() in words
    if w[0].isupper() and rest == rest.upper():
        return w.lower() in words or w.capitalize() in words
    return False


def text_stats(texts, words):
    """(valid-word rate, distinct-2) over the interior words of the windows."""
    n = valid = 0
    grams, total = set(), 0
    for s in texts:
        runs = [(m.start(), m.end()) for m in re.finditer(r"[A-Za-z']+", s)]
        ws = [s[a:b].strip("'") for a, b in runs if a > 0 and b < len(s)]
        ws = [w for w in ws if w]
        n += len(ws)
        valid += sum(valid_word(words, w) for w in ws)
        low = [w.lower() for w in ws]
        grams.update(zip(low, low[1:]))
        total += max(0, len(low) - 1)
    return valid / max(n, 1), len(grams) / max(total, 1)


class LinearInto(torch.autograd.Function):
    """y = h W^T + b computed into a float32 numpy array (libdfm's output buffer, (rows, d * V)),
    with the linear layer's backward. The array is not a tensor input: the output is a new tensor
    over its memory, which the program may then change outside autograd."""

    @staticmethod
    def forward(ctx, h, w, b, out):
        y = torch.from_numpy(out).view(h.shape[0], w.shape[0])
        torch.addmm(b, h, w.t(), out=y)
        ctx.save_for_backward(h, w)
        return y

    @staticmethod
    def backward(ctx, gy):
        h, w = ctx.saved_tensors
        return gy.mm(w), gy.t().mm(h), gy.sum(0), None


class TextNet(torch.nn.Module):
    """Embeddings + learned positions, a depthwise convolution over 5 neighbours, pre-LayerNorm
    transformer blocks whose attention carries a per-head distance penalty (ALiBi), the output
    layer's weights (applied by the caller)."""

    def __init__(self, vocab, length, width, layers, heads):
        super().__init__()
        self.heads = heads
        self.tok = torch.nn.Embedding(vocab, width)
        self.pos = torch.nn.Parameter(torch.randn(length, width) * 0.02)
        self.conv = torch.nn.Conv1d(width, width, 5, padding=2, groups=width)
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                                 activation="gelu", batch_first=True,
                                                 norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, layers)
        self.lnf = torch.nn.LayerNorm(width)
        self.head_w = torch.nn.Parameter(torch.randn(vocab, width) * 0.02)
        self.head_b = torch.nn.Parameter(torch.zeros(vocab))
        i = torch.arange(length, dtype=torch.float32)
        slopes = 2.0 ** -(torch.arange(heads, dtype=torch.float32) + 1)
        self.register_buffer("bias", -slopes[:, None, None] * (i[None, :] - i[:, None]).abs())

    def features(self, tokens):
        n, length = tokens.shape
        x = self.tok(tokens) + self.pos[:length]
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.blocks(x, mask=self.bias.repeat(n, 1, 1))
        return self.lnf(x).reshape(n * length, -1)


def exact_where_known(out, tokens, mask):
    """The posterior where it is known (MDLM's carry-over): the mask token is never data, a
    revealed character stays. libdfm's gradient there is exactly 0, so writing these entries
    outside autograd keeps the backward pass exact. out: (rows * d, V), tokens: (rows, d)."""
    with torch.no_grad():
        tk = tokens.reshape(-1).long()
        known = tk != mask
        out[:, mask] = -math.inf
        out[known] = -math.inf
        out[known.nonzero().squeeze(1), tk[known]] = 0.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="/usr/share/games/fortunes")
    ap.add_argument("--dict", default="/usr/share/dict/words")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--max-seconds", type=float, default=0.0, help="stop training after S s (0: never)")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--sample-steps", type=int, default=64)
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--elbo-times", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check", action="store_true",
                    help="compare libdfm's gradient with torch's cross-entropy gradient first")
    a = ap.parse_args(argv)
    for name in ("steps", "seq_len", "width", "layers", "heads", "batch", "samples",
                 "sample_steps", "eval_windows", "elbo_times", "threads"):
        if getattr(a, name) < 1:
            ap.error("--%s must be >= 1" % name.replace("_", "-"))
    if a.width % a.heads:
        ap.error("--heads must divide --width")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    train_text, held_text = load_corpus(a.corpus)
    words = set(w for w in open(a.dict).read().split("\n") if w)
    chars = sorted(set(train_text))
    lut = {c: k for k, c in enumerate(chars)}
    V, MASK, L = len(chars) + 1, len(chars), a.seq_len
    train = np.array([lut[c] for c in train_text], np.int32)
    held = np.array([lut[c] for c in held_text if c in lut], np.int32)
    print("text_dfm.py: %d training and %d held-out characters, %d characters + mask"
          % (len(train), len(held), V - 1))

    space = dfm.Space.discrete(V, L)
    path = dfm.Path.mixture(space, dfm.Scheduler.condot(), "mask", mask_token=MASK)
    gkl = dfm.Loss.generalized_kl(path)
    trainer = dfm.Trainer(path, gkl, seed=a.seed, threads=1, time_kind="stratified")
    net = TextNet(V, L, a.width, a.layers, a.heads)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr, betas=(0.9, 0.99))
    state = {"logits": None, "model": 0.0}

    def forward(t, tokens, reals, out):  # out: libdfm's buffer (rows, L * V)
        t0 = time.perf_counter()
        h = net.features(torch.from_numpy(tokens))
        state["logits"] = LinearInto.apply(h, net.head_w, net.head_b, out)
        exact_where_known(torch.from_numpy(out).view(-1, V), torch.from_numpy(tokens), MASK)
        state["model"] += time.perf_counter() - t0

    def backward(t, tokens, reals, out, grad):
        t0 = time.perf_counter()
        state["logits"].backward(torch.from_numpy(grad).view(-1, V))
        state["logits"] = None
        state["model"] += time.perf_counter() - t0

    def model(t, tokens, reals, out):  # evaluation and sampling
        with torch.no_grad():
            o = torch.from_numpy(out).view(-1, V)
            h = net.features(torch.from_numpy(tokens))
            torch.addmm(net.head_b, h, net.head_w.t(), out=o)
            exact_where_known(o, torch.from_numpy(tokens), MASK)

    def batch(step):
        # libdfm's counter-based uniforms keyed by the step: reproducible batches
        u = dfm.rng.fill(1, a.batch, a.seed, stream=11, step=step)[0]
        off = (u * (len(train) - L)).astype(np.int64)
        return np.stack([train[o:o + L] for o in off])

    if a.check:
        check_gradient(net, trainer, forward, backward, batch(0), V, MASK)

    ln2, first, last, t_lib, t_all = math.log(2), None, None, 0.0, 0.0
    start = time.perf_counter()
    for step in range(a.steps):
        if a.max_seconds and time.perf_counter() - start > a.max_seconds:
            print("training stopped at %.0f s (--max-seconds)" % a.max_seconds)
            break
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / 10) * (1 - step / a.steps)
        x1 = batch(step)
        t0 = time.perf_counter()
        opt.zero_grad()
        m0 = state["model"]
        s0 = time.perf_counter()
        r = trainer.step(forward, backward, x1_tokens=x1)
        t_lib += time.perf_counter() - s0 - (state["model"] - m0)
        opt.step()
        t_all += time.perf_counter() - t0
        bpc = r.loss / ln2
        first = bpc if first is None else first
        last = bpc
        if (step + 1) % 50 == 0 or step + 1 == a.steps:
            print("step %4d  loss %.3f bits/char  %.1f s" % (step + 1, bpc, time.perf_counter() - start))

    net.eval()
    n = min(a.eval_windows, len(held) // L)
    offs = np.linspace(0, len(held) - L, n).astype(np.int64)
    windows = np.stack([held[o:o + L] for o in offs])
    nelbo, se = gkl.elbo(model, windows, n_t=a.elbo_times, chunk_rows=32, draw=1)
    nelbo_bpc = float(nelbo.mean()) / L / ln2
    gen = dfm.Generator.factorized(path)

    def decode(tok):
        return "".join(chars[k] if k < MASK else "_" for k in tok)

    results = {}
    # the network ignores t (MDLM-style), so unchanged rows need not be sent again
    settings = {"exact step": {}, "confidence, even split": {"order": "confidence",
                                                              "count": "schedule_ceil"}}
    for name, opts in settings.items():
        s = dfm.Sampler(gen, "exact", steps=a.sample_steps, seed=a.seed, threads=1,
                        time_independent=1, **opts)
        x = s.run(model, rows=a.samples).tokens
        texts = [decode(row) for row in x]
        results[name] = text_stats(texts, words)
        print("samples (%s, %d steps): valid_word_rate=%.3f distinct2=%.3f"
              % (name, a.sample_steps, *results[name]))
        for s_ in texts[:2]:
            print("  " + s_.replace("\n", "|"))
    data_valid, _ = text_stats([decode(w) for w in windows], words)
    print("details: nelbo_se=%.3f data_valid_word_rate=%.3f confidence_valid_word_rate=%.3f "
          "loss_first=%.3f" % (float(np.sqrt((se ** 2).sum())) / n / L / ln2, data_valid,
                               results["confidence, even split"][0], first))
    print("result: nelbo_bpc=%.3f valid_word_rate=%.3f distinct2=%.3f library_share=%.4f "
          "train_seconds=%.1f loss_last=%.3f"
          % (nelbo_bpc, *results["exact step"], t_lib / max(t_all, 1e-9), t_all, last))
    return 0


def check_gradient(net, trainer, forward, backward, x1, V, MASK):
    """libdfm's generalized-KL gradient, back-propagated, against torch's own gradient of the
    same loss (-c log p(x1) at masked positions, c = 1 / (1 - t), mean over all positions)."""
    seen = {}

    def fwd(t, tokens, reals, out):
        seen["t"], seen["xt"] = t.copy(), tokens.copy()
        forward(t, tokens, reals, out)

    net.zero_grad()
    step = trainer.step_count
    r = trainer.step(fwd, backward, x1_tokens=x1)
    trainer.set_step(step)  # the check does not consume a step
    ours = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    xt = torch.from_numpy(seen["xt"]).long()
    h = net.features(xt)
    z = torch.addmm(net.head_b, h, net.head_w.t())
    z = z.index_fill(1, torch.tensor([MASK]), -math.inf)
    masked = (xt.reshape(-1) == MASK)
    c = (1.0 / (1.0 - torch.from_numpy(seen["t"]))).repeat_interleave(xt.shape[1])
    nll = torch.nn.functional.cross_entropy(z, torch.from_numpy(x1).long().reshape(-1),
                                            reduction="none")
    ref = (c * nll * masked).sum() / xt.numel()
    ref.backward()
    diff = max(float((p.grad - g).abs().max()) for p, g in zip(net.parameters(), ours))
    scale = max(float(p.grad.abs().max()) for p in net.parameters())
    net.zero_grad()
    print("check: loss libdfm %.6f torch %.6f; gradient max difference %.2e (largest entry %.2e)"
          % (r.loss, float(ref), diff, scale))
    if not (abs(r.loss - float(ref)) <= 1e-4 * max(1.0, abs(float(ref))) and diff <= 1e-4 * scale):
        raise SystemExit("text_dfm.py: libdfm's gradient does not match torch's")


if __name__ == "__main__":
    sys.exit(main())
