"""A hand-worked oracle for one whole GRW-CZSL training step.

A tiny trainer (C = 4 classes, K = 3 seen, B = 4 with one seen class absent from the batch, 2-d
attributes, 3-d features, hidden width 2, 2 generated samples per class, 1 walk step) with fixed weights and fixed "random" draws. The test
recomputes every loss term of the step from the reference note's formulas (grw_czsl.md §3) with
its own code, in float64: D's loss, G's seen loss, the creativity loss and the four random walks
(with their visit terms), then applies Adam's update by hand (first step: p − lr·g/(|g| + ε) with
g = ∇ + wd·p; for ``two_step`` the second step with Adam's moments), and compares every term and
every updated weight with what ``GRWTrainer.step`` did. Nothing of grw.py's loss code is shared:
an error in how the losses are combined, a sign, a schedule or a stale prototype shows up here.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from zslfast.engine import RunContext
from zslfast.config import resolve_config
from zslfast.data import ZSLDataset
from zslfast.models.grw import GRWTrainer

B, K, C, DA, DX, H, N_PER = 4, 3, 4, 2, 3, 2, 2
TAU, EPS_LOG, LR, WD = 10.0, 1e-8, 5e-3, 1e-5
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def _dataset():
    att = torch.tensor([[1.0, 0.2], [0.3, 1.0], [0.8, 0.5], [0.7, 0.7]])
    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2, 3, 3])
    feats = torch.rand(11, DX, generator=g) + 0.1
    splits = {"trainval": torch.arange(6), "test_seen": torch.tensor([6, 7, 8]), "test_unseen": torch.tensor([9, 10])}
    return ZSLDataset("tiny", feats, labels, att, ["a", "b", "c", "d"], splits, source="tiny")


def _weights():
    """Fixed, hand-picked weights (float64): W1 [H, in], b1 [H], W2 [out, H], b2 [out]."""
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    return {
        "g.fc1.weight": t([[0.5, -0.3, 0.8, 0.1], [-0.2, 0.6, 0.3, 0.9]]),
        "g.fc1.bias": t([0.1, -0.05]),
        "g.fc2.weight": t([[0.7, -0.4], [0.2, 0.9], [-0.6, 0.5]]),
        "g.fc2.bias": t([0.05, -0.1, 0.2]),
        "d.0.weight": t([[0.9, 0.2], [-0.3, 0.8]]),
        "d.0.bias": t([0.1, 0.2]),
        "d.2.weight": t([[0.6, 0.3], [0.4, -0.2], [0.1, 0.7]]),
        "d.2.bias": t([0.3, 0.2, 0.1]),
    }


def _draws():
    """The step's random draws in the order the original algorithm makes them: z for the seen
    batch, two permutations and a uniform u (α = 0.2 + 0.6·u) for the interpolated attributes, z for
    the hallucinated batch, then fresh noise for the four walks' generated samples (K·n rows each,
    class-major)."""
    g = torch.Generator().manual_seed(11)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return [rnd(B, DA), torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2]),
            torch.rand(B, 1, generator=g, dtype=torch.float64), rnd(B, DA),
            rnd(K * N_PER, DA), rnd(K * N_PER, DA), rnd(K * N_PER, DA), rnd(K * N_PER, DA)]


# --------------------------------------------------------------------- the oracle's own networks
def gen(w, z, a):
    h = torch.relu(torch.cat([z, a], 1) @ w["g.fc1.weight"].T + w["g.fc1.bias"])
    return torch.sigmoid(h @ w["g.fc2.weight"].T + w["g.fc2.bias"])


def emb(w, a):
    h = torch.relu(a @ w["d.0.weight"].T + w["d.0.bias"])
    return torch.relu(h @ w["d.2.weight"].T + w["d.2.bias"])


def cos(u, v):
    return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))


def softmax_rows(logits):
    e = torch.exp(logits - logits.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def walk(centers, points, target, steps=1, decay=0.7, visit=1.0, clamp=1e-10):
    """Σ_t γ^t ℓ_t + visit·L_visit with explicit transition matrices (temperature 1, cosines)."""
    m = points.shape[0]
    s_cx = torch.stack([torch.stack([cos(c, x) for x in points]) for c in centers])
    s_xx = torch.stack([torch.stack([cos(a, b) if i != j else torch.tensor(-math.inf, dtype=a.dtype)
                                     for j, b in enumerate(points)]) for i, a in enumerate(points)])
    p_cx, p_xx, p_xc = softmax_rows(s_cx), softmax_rows(s_xx), softmax_rows(s_cx.T)
    loss, q = 0.0, p_cx
    for t in range(steps + 1):
        land = (q @ p_xc).clamp(clamp, 1 - clamp)
        ell = -torch.log(torch.diagonal(land)).mean() if target == "diag" else -torch.log(land).mean()
        loss = loss + decay ** t * ell
        q = q @ p_xx
    return loss + visit * -torch.log(p_cx.mean(0).clamp(clamp, 1 - clamp)).mean()


def class_centers(samples):
    return samples.view(K, N_PER, -1).mean(1)


def d_loss(w, x, y, z, att, mu):
    protos = emb(w, att[:K])
    real = torch.stack([TAU * cos(protos[y[i]], x[j]) for i in range(B) for j in range(B)]).mean()  # all pairs
    fake = torch.stack([TAU * cos(protos[y[i]], gen(w, z[i:i + 1], att[y[i]][None])[0]) for i in range(B)]).mean()
    logits = torch.stack([torch.stack([TAU * cos(x[i], protos[k]) for k in range(K)]) for i in range(B)])
    ce = -torch.log(softmax_rows(logits)[torch.arange(B), y]).mean()
    mse = ((protos - mu[:K]) ** 2).mean()
    return -torch.log(real + EPS_LOG) + torch.log(fake + EPS_LOG) + ce + mse


def g_seen_terms(w, protos, x_gen, y, mu, neighbours, sigma, margin=0.01, lower=0.01, lsr_weight=20.0):
    align = -torch.log(torch.stack([TAU * cos(protos[y[i]], x_gen[i]) for i in range(B)]).mean() + EPS_LOG)
    logits = torch.stack([torch.stack([TAU * cos(x_gen[i], protos[k]) for k in range(K)]) for i in range(B)])
    ce = -torch.log(softmax_rows(logits)[torch.arange(B), y]).mean()
    lsr, euc = 0.0, 0.0
    for k in range(K):
        rows = [i for i in range(B) if y[i] == k]
        if not rows:
            continue
        mean = x_gen[rows].mean(0)
        euc = euc + (mean - mu[k]).norm()
        for n in range(neighbours.shape[1]):
            c = cos(mean, mu[neighbours[k, n]])
            s = sigma[k, n]
            lsr = lsr + torch.relu(c - (s + margin)) ** 2 + torch.relu((s - lower) - c) ** 2
    return align + ce + lsr_weight * lsr + euc / K


def g_creative_terms(w, protos, x, y, att, draws, w_cr=1.0, w_walk=(1.0, 2.5, 1.0), w_grw=2.0):
    _, p1, p2, u, z_h, n1, n2, n3, n4 = draws
    alpha = 0.2 + 0.6 * u  # interpolation_range [0.2, 0.8]
    a = att[y]
    att_h = alpha * a[p1] + (1 - alpha) * a[p2]
    x_h = F.normalize(gen(w, z_h, att_h), dim=1)
    logits = torch.stack([torch.stack([TAU * cos(x_h[b], protos[k]) for k in range(K)]) for b in range(B)])
    log_p = torch.log(softmax_rows(logits))
    creativity = (-w_cr * log_p.mean() / K
                  - torch.stack([TAU * cos(emb(w, att_h[b:b + 1])[0], x_h[b]) for b in range(B)]).mean())
    cls = torch.arange(K).repeat_interleave(N_PER)
    s1, s2, s3, s4 = (gen(w, n, att[cls]) for n in (n1, n2, n3, n4))
    return {"creativity": creativity,
            "rw_discr_imitative": w_walk[0] * walk(class_centers(s1), s1, "diag"),
            "rw_discr_real": w_walk[1] * walk(class_centers(s2)[torch.unique(y)], x, "diag"),
            "rw_gen_imitative": w_walk[2] * walk(class_centers(s3), s3, "diag"),
            "rw_gen_creative": w_grw * walk(class_centers(s4), x_h, "uniform")}


def adam_first_step(p, g):
    """Adam's first update with L2 weight decay, by hand: m̂ = ĝ, v̂ = ĝ², ĝ = g + wd·p."""
    gg = g + WD * p
    return p - LR * gg / (gg.abs() + ADAM_EPS), gg


def adam_second_step(p, g, g_first):
    """Adam's second update given the first step's decayed gradient ``g_first``."""
    b1, b2 = BETAS
    gg = g + WD * p
    m = b1 * (1 - b1) * g_first + (1 - b1) * gg
    v = b2 * (1 - b2) * g_first ** 2 + (1 - b2) * gg ** 2
    return p - LR * (m / (1 - b1 ** 2)) / ((v / (1 - b2 ** 2)).sqrt() + ADAM_EPS)


# ------------------------------------------------------------------------------------ the test
def _trainer(schedule, monkeypatch):
    data = _dataset()
    cfg = resolve_config("grw", "synthetic", overrides=[
        f"schedule={schedule}", f"hidden={H}", f"rw.samples_per_class={N_PER}", "rw.steps=1", "neighbours=2"])
    tr = GRWTrainer(data, cfg, RunContext())
    tr.model.double()
    tr.att, tr.mu = tr.att.double(), tr.mu.double()
    tv = data.splits["trainval"]
    tr.start_task(K, torch.arange(K), data.features[tv].double(), data.labels[tv])
    batch = torch.tensor([0, 1, 4, 5])  # classes 0, 0, 2, 2: seen class 1 is absent from the batch
    x, y = data.features[batch].double(), data.labels[batch]
    names = {"g.fc1.weight": tr.model.generator.fc1.weight, "g.fc1.bias": tr.model.generator.fc1.bias,
             "g.fc2.weight": tr.model.generator.fc2.weight, "g.fc2.bias": tr.model.generator.fc2.bias,
             "d.0.weight": tr.model.embedder.net[0].weight, "d.0.bias": tr.model.embedder.net[0].bias,
             "d.2.weight": tr.model.embedder.net[2].weight, "d.2.bias": tr.model.embedder.net[2].bias}
    with torch.no_grad():
        for key, value in _weights().items():
            names[key].copy_(value)
    # Every draw the trainer makes from its generator comes from the fixed list, in order.
    queue = list(_draws())
    real = {f: getattr(torch, f) for f in ("randn", "randperm", "rand", "randint")}

    def fake(fn):
        def draw(*args, generator=None, **kwargs):
            if generator is not tr.gen:
                return real[fn](*args, generator=generator, **kwargs)
            value = queue.pop(0)
            shape = args[0] if fn == "randperm" else tuple(a for a in args if isinstance(a, int))
            expected = (shape,) if fn == "randperm" else tuple(shape)
            assert tuple(value.shape) == expected, (fn, value.shape, expected)
            return value.to(kwargs.get("dtype") or value.dtype)
        return draw

    for fn in real:
        monkeypatch.setattr(torch, fn, fake(fn))
    return tr, names, x, y, queue


@pytest.mark.parametrize("schedule", ["one_step", "two_step"])
def test_one_training_step_equals_the_hand_worked_oracle(schedule, monkeypatch):
    tr, params, x, y, queue = _trainer(schedule, monkeypatch)
    att, mu = tr.att, tr.mu.clone()
    data = _dataset()
    tv = data.splits["trainval"]
    for k in range(K):  # real class means of the task's training features
        torch.testing.assert_close(mu[k], data.features[tv][data.labels[tv] == k].double().mean(0))
    # the neighbour lists by hand: each class's 2 most similar seen classes by attribute cosine
    sims = [[float(cos(att[k], att[j])) for j in range(K)] for k in range(K)]
    neighbours = torch.tensor([sorted(range(K), key=lambda j: -sims[k][j])[:2] for k in range(K)])
    sigma = torch.tensor([[sims[k][j] for j in neighbours[k]] for k in range(K)], dtype=torch.float64)
    assert neighbours[:, 0].tolist() == list(range(K))  # itself first
    assert torch.equal(tr.neighbours, neighbours)
    torch.testing.assert_close(tr.sigma, sigma)
    draws = _draws()
    out = tr.step(x, y)
    assert not queue  # every draw was consumed, in the expected order

    w0 = {k: v.clone().requires_grad_() for k, v in _weights().items()}
    # D's step
    ld = d_loss(w0, x, y, draws[0], att, mu)
    d_keys = [k for k in w0 if k.startswith("d.")]
    grads = torch.autograd.grad(ld, [w0[k] for k in d_keys])
    w1 = {k: v.detach().clone() for k, v in w0.items()}
    for k, g in zip(d_keys, grads):
        w1[k], _ = adam_first_step(w0[k].detach(), g)
    torch.testing.assert_close(out["d"], ld.detach(), rtol=1e-10, atol=1e-12)

    # G's step(s), D fixed at its updated weights, prototypes recomputed after D's update (default)
    g_keys = [k for k in w0 if k.startswith("g.")]
    wg = {k: (w1[k].clone().requires_grad_() if k in g_keys else w1[k]) for k in w1}
    protos = emb(w1, att[:K])
    x_gen = gen(wg, draws[0], att[y])
    seen = g_seen_terms(wg, protos, x_gen, y, mu, neighbours, sigma)
    if schedule == "one_step":
        terms = g_creative_terms(wg, protos, x, y, att, draws)
        total = seen + sum(terms.values())
        grads = torch.autograd.grad(total, [wg[k] for k in g_keys])
        final = {k: adam_first_step(w1[k], g)[0] for k, g in zip(g_keys, grads)}
    else:
        g_seen = torch.autograd.grad(seen, [wg[k] for k in g_keys])
        after_first = {}
        firsts = {}
        for k, g in zip(g_keys, g_seen):
            after_first[k], firsts[k] = adam_first_step(w1[k], g)
        w2 = {k: (after_first[k].clone().requires_grad_() if k in g_keys else w1[k]) for k in w1}
        terms = g_creative_terms(w2, protos, x, y, att, draws)
        g_cr = torch.autograd.grad(sum(terms.values()), [w2[k] for k in g_keys])
        # the seen gradients stay in .grad: the second step applies seen + creative gradients
        final = {k: adam_second_step(after_first[k], gs + gc, firsts[k]) for k, gs, gc in zip(g_keys, g_seen, g_cr)}
    torch.testing.assert_close(out["g_seen"], seen.detach(), rtol=1e-10, atol=1e-12)
    for key, value in terms.items():
        torch.testing.assert_close(out[key], value.detach(), rtol=1e-10, atol=1e-12, msg=key)
    torch.testing.assert_close(out["g_creative"], sum(terms.values()).detach(), rtol=1e-10, atol=1e-12)
    for k in d_keys:
        torch.testing.assert_close(params[k].detach(), w1[k], rtol=1e-10, atol=1e-12, msg=k)
    for k in g_keys:
        torch.testing.assert_close(params[k].detach(), final[k], rtol=1e-10, atol=1e-12, msg=k)
