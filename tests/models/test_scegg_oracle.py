"""SC-EGG's stage 3 against an independent oracle, written from the specification
(``sc_egg_spec.md`` §1.5-1.6), not from ``zslfast.models.scegg``: every network as explicit
matrix products of the model's starting weights, the critic's input gradient in closed form (no
double backward), every loss term spelled out, λ's update, and Adam's update by hand.

A tiny float64 case (4 features, 3 attributes, hidden width 5, 3 seen + 2 unseen classes, 3 rows
per batch, 2 critic steps) runs two iterations of ``zslfast.nn.vaegan.train_step`` with scripted batches and a
seeded generator whose draws the oracle replays in the specified order. The weights are drawn wide
(std 0.3 instead of 0.02) and every loss weight is set apart from the others, so a wrong sign,
weight, attribute row, missing term or un-carried λ moves the losses and the weights after the
steps by far more than rounding. Tolerances: losses and penalties 1e-8 relative, weights 1e-9
absolute. Adam's early steps divide by |g| + 1e-8, so a gradient entry that is nearly zero turns
1e-17 of rounding into up to 1e-10 of weight (lr/eps = 1e6 times); every bug tried moves weights
by about lr = 1e-2.

Also here: the final classifiers' input [x, Dec(x), Dec.hidden(x)] (spec §1.6) and which rows each
classifier trains on (GZSL: real trainval + synthetic unseen; ZSL: synthetic unseen only).
"""
import math

import pytest
import torch
import torch.nn.functional as F

import zslfast.eval.generative as generative
from zslfast.data.dataset import ZSLDataset
from zslfast.engine import RunContext
from zslfast.engine.recipe import Stage, stage_step
from zslfast.models import scegg
from zslfast.nn import vaegan
from zslfast.nn.dazle import DistillationHead

C, A, HIDDEN, K = 4, 3, 5, 5
SEEN, UNSEEN = [0, 1, 2], [3, 4]
GAN = {"hidden": HIDDEN, "critic_iters": 2, "feedback_loops": 2, "lr": 0.01, "dec_lr": 0.02, "feed_lr": 0.03,
       "beta1": 0.5, "gamma_d": 0.7, "gamma_g": 1.3, "lambda_gp": 10.0, "recons_weight": 0.05,
       "seen_cls_weight": 0.8, "unseen_cls_weight": 0.3, "a1": 0.4, "a2": 0.0, "freeze_dec": False,
       "encoded_noise": True}
BATCHES = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 0])]  # 2 critic, 1 generator


def _lrelu(x, slope=0.2):
    return torch.where(x > 0, x, slope * x)


def _lin(p, name, x):
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


# ------------------------------------------------------------------ the networks, from the spec
def E(p, x, a):
    h = _lrelu(_lin(p, "E.fc2", _lrelu(_lin(p, "E.fc1", torch.cat([x, a], 1)))))
    return _lin(p, "E.mu", h), _lin(p, "E.logvar", h)


def G(p, z, a, fb=None, w=0.0):
    h = _lrelu(_lin(p, "G.fc1", torch.cat([z, a], 1)))
    if w:
        h = h + w * fb
    return torch.sigmoid(_lin(p, "G.fc2", h))


def D_pre(p, x, a):
    return _lin(p, "D.fc1", torch.cat([x, a], 1))


def D(p, x, a):
    return _lin(p, "D.fc2", _lrelu(D_pre(p, x, a)))[:, 0]


def D_input_gradient(p, x, a):
    """∂D/∂x in closed form: W1[:, :C]ᵀ (lrelu'(pre) ⊙ w2) per row."""
    slope = torch.where(D_pre(p, x, a) > 0, 1.0, 0.2).to(x.dtype)
    return (slope * p["D.fc2.weight"][0]) @ p["D.fc1.weight"][:, :C]


def Dec(p, x):
    hidden = _lrelu(_lin(p, "Dec.fc1", x))
    out = _lin(p, "Dec.fc2", hidden)
    return out / out.norm(dim=1, keepdim=True), hidden


def Fb(p, h):
    return _lrelu(_lin(p, "Fb.fc2", _lrelu(_lin(p, "Fb.fc1", h))))


def head(hp, x):
    return _lin(hp, "net.2", _lrelu(_lin(hp, "net.0", x), 0.01))


def WL1(pred, target):
    d = pred - target
    return ((d.abs() ** 3).sum(1) / d.norm(dim=1)).mean()


def feedback_G(p, z, a, w, source=None):
    """G(z, a) with the feedback of Dec's detached hidden state on ``source`` (default G(z, a))."""
    if not w:
        return G(p, z, a)
    src = G(p, z, a) if source is None else source
    return G(p, z, a, Fb(p, Dec(p, src)[1].detach()), w)


class HandAdam:
    """Adam (bias-corrected, eps 1e-8) over the named parameters ``names``."""

    def __init__(self, names, lr, betas):
        self.names, self.lr, self.betas, self.t = names, lr, betas, 0
        self.m, self.v = {}, {}

    def step(self, p, grads):
        self.t += 1
        b1, b2 = self.betas
        for n in self.names:
            g = grads[n]
            self.m[n] = b1 * self.m.get(n, 0 * g) + (1 - b1) * g
            self.v[n] = b2 * self.v.get(n, 0 * g) + (1 - b2) * g * g
            m_hat, v_hat = self.m[n] / (1 - b1 ** self.t), self.v[n] / (1 - b2 ** self.t)
            p[n] = (p[n] - self.lr * m_hat / (v_hat.sqrt() + 1e-8)).detach()


class Oracle:
    """Stage 3 by the spec, on a dict of parameter tensors."""

    def __init__(self, gan, head_module, q):
        self.p = {n: t.detach().clone() for n, t in gan.state_dict().items()}
        self.hp = {n: t.detach().clone() for n, t in head_module.state_dict().items()}
        self.q, self.lam, self.gps = q, q["lambda_gp"], []
        group = {m: [n for n in self.p if n.startswith(m + ".")] for m in ("E", "G", "D", "Dec", "Fb")}
        b = (q["beta1"], 0.999)
        self.opt = {"E": HandAdam(group["E"], q["lr"], (0.9, 0.999)), "G": HandAdam(group["G"], q["lr"], b),
                    "D": HandAdam(group["D"], q["lr"], b), "Dec": HandAdam(group["Dec"], q["dec_lr"], b),
                    "Fb": HandAdam(group["Fb"], q["feed_lr"], b)}

    def _descend(self, nets, loss_fn):
        """Gradient of ``loss_fn(p)`` w.r.t. the parameters of ``nets``; one hand Adam step of each."""
        names = [n for m in nets for n in self.opt[m].names]
        p = {n: (t.detach().requires_grad_(True) if n in names else t.detach()) for n, t in self.p.items()}
        loss = loss_fn(p)
        grads = dict(zip(names, torch.autograd.grad(loss, [p[n] for n in names], allow_unused=True)))
        grads = {n: torch.zeros_like(self.p[n]) if g is None else g for n, g in grads.items()}
        for m in nets:
            self.opt[m].step(self.p, grads)
        return loss.detach()

    def iteration(self, loop, x_all, y_all, att, g, generator_batch="fresh"):
        """One iteration; ``generator_batch="last"``: TF-VAEGAN's, a critic step on every batch and
        the generator step on the last critic batch again."""
        q, w = self.q, (self.q["a1"] if loop == 1 else 0.0)
        unseen = torch.tensor(UNSEEN)
        gps = []
        for idx in (BATCHES if generator_batch == "last" else BATCHES[:-1]):
            x, a = x_all[idx], att[y_all[idx]]
            self._descend(["Dec"], lambda p: q["recons_weight"] * WL1(Dec(p, x)[0], a))
            eps = torch.randn(3, A, generator=g, dtype=torch.float64)
            with torch.no_grad():
                if q["encoded_noise"]:
                    mu, logvar = E(self.p, x, a)
                    z = mu + torch.exp(0.5 * logvar) * eps
                else:
                    z = eps
                fake = feedback_G(self.p, z, a, w)
            u = torch.rand(3, 1, generator=g, dtype=torch.float64)
            mixed = u * x + (1 - u) * fake

            def critic_loss(p):
                gp = ((D_input_gradient(p, mixed, a).norm(dim=1) - 1) ** 2).mean()
                gps.append(gp.detach())
                return q["gamma_d"] * (D(p, fake, a).mean() - D(p, x, a).mean() + self.lam * gp)

            critic = self._descend(["D"], critic_loss)
        mean_gp = float(sum(gps)) / len(gps)
        self.gps.append(mean_gp)
        self.lam = self.lam * 1.1 if mean_gp > 1.05 else self.lam / 1.1 if mean_gp < 1.001 else self.lam

        idx = BATCHES[-1]
        x, y = x_all[idx], y_all[idx]
        a = att[y]
        eps = torch.randn(3, A, generator=g, dtype=torch.float64)
        guided = q.get("seen_cls_weight", 0) > 0  # SC-EGG's guidance by the head; TF-VAEGAN has none
        if guided:
            u_cls = unseen[torch.randint(len(UNSEEN), (3,), generator=g)]
            eps_u = torch.randn(3, A, generator=g, dtype=torch.float64)
        eps_f = None if q["encoded_noise"] else torch.randn(3, A, generator=g, dtype=torch.float64)
        terms = {}

        def generator_loss(p):
            mu, logvar = E(p, x, a)
            recon = feedback_G(p, mu + torch.exp(0.5 * logvar) * eps, a, w)
            bce = -(x * torch.log(recon + 1e-12) + (1 - x) * torch.log(1 - recon - 1e-12)).sum()
            kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum()
            terms["vae"] = (bce + kl) / 3
            guidance = 0.0
            if guided:
                terms["cls_seen"] = F.cross_entropy(head(self.hp, recon), y)
                terms["cls_unseen"] = F.cross_entropy(head(self.hp, G(p, eps_u, att[u_cls])), u_cls)
                guidance = q["seen_cls_weight"] * terms["cls_seen"] + q["unseen_cls_weight"] * terms["cls_unseen"]
            fake = recon if q["encoded_noise"] else feedback_G(p, eps_f, a, w, source=recon)
            return (terms["vae"] - q["gamma_g"] * D(p, fake, a).mean() + guidance
                    + q["recons_weight"] * WL1(Dec(p, fake)[0], a))

        nets = ["E", "G"] + (["Fb"] if w else []) + ([] if q["freeze_dec"] else ["Dec"])
        generator = self._descend(nets, generator_loss)
        return {"critic": float(critic), "generator": float(generator), **{k: v.item() for k, v in terms.items()}}


def _case(**overrides):
    torch.manual_seed(0)
    q = {**GAN, **overrides}
    gan = scegg.VAEGAN(C, A, HIDDEN).double()
    hd = DistillationHead(C, K, 6).double()
    with torch.no_grad():
        for t in [*gan.parameters(), *hd.parameters()]:
            t.normal_(0, 0.3)
    for t in hd.parameters():
        t.requires_grad_(False)
    gx = torch.Generator().manual_seed(5)
    x_all = 0.05 + 0.9 * torch.rand(8, C, generator=gx, dtype=torch.float64)  # a min-max scaled cache
    y_all = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    att = torch.rand(K, A, generator=gx, dtype=torch.float64)
    return q, gan, hd, x_all, y_all, att


def _close(a, b, tol=1e-8):
    return abs(a - b) <= tol * max(1.0, abs(b))


@pytest.mark.parametrize("loop,encoded_noise,freeze_dec", [(0, True, False), (1, True, False), (1, False, False),
                                                           (0, False, True)])
def test_two_stage3_iterations_equal_the_hand_written_oracle(loop, encoded_noise, freeze_dec, monkeypatch):
    """Losses, λ (carried from the first iteration into the second, updated from the mean of each
    iteration's critic penalties) and every weight of all five networks after two iterations."""
    q, gan, hd, x_all, y_all, att = _case(encoded_noise=encoded_noise, freeze_dec=freeze_dec)
    oracle = Oracle(gan, hd, q)
    lambda_calls = []
    adapt = vaegan.adapt_lambda

    def recording(lam, gp, *a, **k):
        lambda_calls.append((lam, gp))
        return adapt(lam, gp, *a, **k)

    monkeypatch.setattr(vaegan, "adapt_lambda", recording)
    model = scegg.SCEGGModel(None, hd, gan)
    cfg = {"gan": q}
    state = {"lambda": q["lambda_gp"]}
    g_code, g_oracle = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    step = stage_step(scegg.gan_stage(model, x_all, y_all, att, torch.tensor(UNSEEN), cfg, g_code, state))
    lambdas = []
    for it in range(2):
        got = {k: float(v) for k, v in step((loop, BATCHES)).items()}
        want = oracle.iteration(loop, x_all, y_all, att, g_oracle)
        assert got.keys() == want.keys(), (got.keys(), want.keys())
        assert all(_close(got[k], want[k]) for k in want), (it, got, want)
        assert _close(state["lambda"], oracle.lam), (it, state["lambda"], oracle.lam)
        lambdas.append(state["lambda"])
    # λ used the mean penalty of each iteration and started the second iteration where the first ended
    assert [c[0] for c in lambda_calls] == [q["lambda_gp"], lambdas[0]]
    assert all(_close(c[1], gp) for c, gp in zip(lambda_calls, oracle.gps)), (lambda_calls, oracle.gps)
    assert lambdas[1] != lambdas[0]  # it did move: a λ reset every iteration would fail above
    for name, t in gan.state_dict().items():
        assert torch.allclose(t, oracle.p[name], rtol=0, atol=1e-9), (name, float((t - oracle.p[name]).abs().max()))
    # the networks the spec says are not stepped in this configuration kept their weights
    start = Oracle(*_case(encoded_noise=encoded_noise, freeze_dec=freeze_dec)[1:3], q).p
    fb_moved = any(not torch.equal(gan.state_dict()[n], start[n]) for n in start if n.startswith("Fb."))
    assert fb_moved == (loop == 1)


@pytest.mark.parametrize("loop,encoded_noise,freeze_dec", [(0, True, False), (1, True, True), (1, False, False)])
def test_tfvaegan_iterations_equal_the_oracle(loop, encoded_noise, freeze_dec):
    """TF-VAEGAN's iteration (``generator_batch="last"``, no guidance head): a critic step on each of
    the three batches, then the generator step on the last of them again, by the oracle; losses,
    λ and every weight after two iterations."""
    q, gan, hd, x_all, y_all, att = _case(encoded_noise=encoded_noise, freeze_dec=freeze_dec)
    q = {k: v for k, v in q.items() if k not in ("seen_cls_weight", "unseen_cls_weight")}
    oracle = Oracle(gan, hd, q)
    state = {"lambda": q["lambda_gp"]}
    g_code, g_oracle = torch.Generator().manual_seed(13), torch.Generator().manual_seed(13)
    step = stage_step(Stage("t", gan.networks(), vaegan.vaegan_optimizers(gan, q), None, epochs=1, state=None,
                            step=vaegan.train_step(gan, x_all, y_all, att, torch.tensor(UNSEEN), q, g_code, state,
                                                   generator_batch="last")))
    for it in range(2):
        got = {k: float(v) for k, v in step((loop, BATCHES)).items()}
        want = oracle.iteration(loop, x_all, y_all, att, g_oracle, generator_batch="last")
        assert got.keys() == want.keys(), (got.keys(), want.keys())
        assert all(_close(got[k], want[k]) for k in want), (it, got, want)
        assert _close(state["lambda"], oracle.lam), (it, state["lambda"], oracle.lam)
    for name, t in gan.state_dict().items():
        assert torch.allclose(t, oracle.p[name], rtol=0, atol=1e-9), (name, float((t - oracle.p[name]).abs().max()))


def test_lambda_rises_after_large_penalties():
    """A critic with large input gradients (‖∇D‖ ≫ 1) makes the mean penalty exceed 1.05: λ grows
    by 1.1 per iteration (the other branch of the adaptive weight, through the step itself)."""
    q, gan, hd, x_all, y_all, att = _case()
    with torch.no_grad():
        gan.D.fc1.weight.mul_(100)
    oracle = Oracle(gan, hd, q)
    g_code, g_oracle = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    state = {"lambda": q["lambda_gp"]}
    step = stage_step(scegg.gan_stage(scegg.SCEGGModel(None, hd, gan), x_all, y_all, att, torch.tensor(UNSEEN),
                                      {"gan": q}, g_code, state))
    step((0, BATCHES))
    oracle.iteration(0, x_all, y_all, att, g_oracle)
    assert oracle.gps[0] > 1.05 and math.isclose(state["lambda"], q["lambda_gp"] * 1.1)


# ------------------------------------------------------------------ the final classifiers' inputs
def test_classifier_input_is_x_decoder_output_and_decoder_hidden_state():
    _, gan, _, x_all, _, _ = _case()
    out, hidden = Dec({n: t for n, t in gan.state_dict().items()}, x_all)
    with torch.no_grad():
        aug = gan.augment(x_all)
    assert aug.shape == (8, C + A + HIDDEN)
    assert torch.allclose(aug, torch.cat([x_all, out, hidden], 1), rtol=1e-12, atol=1e-14)


def test_final_classifiers_train_on_trainval_plus_synthetic_and_synthetic_only(monkeypatch):
    """SCEGG.evaluate: the GZSL classifier trains on exactly [augmented real trainval rows;
    augmented synthetic unseen rows] with their class ids, the ZSL one on the same synthetic rows
    only (labels 0..U-1); both are (C + A + hidden)-wide; no test row reaches either."""
    q, gan, hd, _, _, att = _case()
    gx = torch.Generator().manual_seed(7)
    labels = torch.arange(K).repeat_interleave(4)
    feats = torch.rand(labels.numel(), C, generator=gx, dtype=torch.float64)
    pos = torch.arange(labels.numel()) % 4
    is_unseen = labels >= 3
    splits = {"trainval": torch.nonzero(~is_unseen & (pos < 3)).flatten(),
              "test_seen": torch.nonzero(~is_unseen & (pos == 3)).flatten(),
              "test_unseen": torch.nonzero(is_unseen).flatten()}
    dense = ZSLDataset("tiny", feats, labels, att, [str(c) for c in range(K)], splits)
    model = scegg.SCEGGModel(None, hd, gan)
    model.dense = dense
    calls = []
    real = generative.train_softmax_classifier

    def spy(x, y, num_classes, *a, **k):
        calls.append((x.clone(), y.clone(), num_classes))
        return real(x, y, num_classes, *a, **k)

    monkeypatch.setattr(generative, "train_softmax_classifier", spy)
    cfg = {"gan": q, "synth_per_class": 6, "synth_ratio": None, "calibration": 0.0, "attribute_norm": "none",
           "classifier": {"lr": 0.01, "epochs": 1, "batch_size": 8, "init": "normal", "zsl_outputs": "unseen"}}
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the whole evaluation in float64, as the tiny model is
    try:
        scegg.SCEGG().evaluate(model, None, cfg, RunContext(progress=False), {"gzsl": 1, "zsl": 1})
    finally:
        torch.set_default_dtype(default)
    (gx_, gy, gk), (zx, zy, zk) = calls
    tv = splits["trainval"]
    n_tv, n_syn = tv.numel(), 6 * len(UNSEEN)
    assert gk == K and zk == len(UNSEEN) and gx_.shape[1] == zx.shape[1] == C + A + HIDDEN
    p = gan.state_dict()
    out, hidden = Dec(p, feats[tv])
    assert torch.allclose(gx_[:n_tv], torch.cat([feats[tv], out, hidden], 1), rtol=1e-12, atol=1e-14)
    assert torch.equal(gy[:n_tv], labels[tv])
    assert gx_.shape[0] == n_tv + n_syn and torch.equal(gx_[n_tv:], zx)
    assert torch.equal(gy[n_tv:], torch.tensor(UNSEEN).repeat_interleave(6))
    assert torch.equal(zy, torch.arange(len(UNSEEN)).repeat_interleave(6))
    syn = zx[:, :C]  # synthetic features are G's sigmoid outputs, augmented the same way
    assert ((syn > 0) & (syn < 1)).all()
    assert torch.allclose(zx[:, C:], torch.cat(Dec(p, syn), 1), rtol=1e-12, atol=1e-14)
