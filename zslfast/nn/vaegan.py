"""TF-VAEGAN's networks, losses and training iteration (Narayan et al., ECCV 2020), the generative
stage of SC-EGG.

Written from ``../shared/reference/sc_egg_spec.md`` §1.5 (TF-VAEGAN is MIT-licensed; SC-EGG reuses
it): every Linear layer starts N(0, 0.02) with zero bias, LeakyReLU(0.2) throughout.

- :class:`Encoder` E: [x, a] → hidden → 2·latent → (μ, log σ²);
- :class:`Generator` G: [z, a] → hidden (+ a1·feedback) → features, sigmoid output (features
  min-max scaled to [0, 1]);
- :class:`Critic` D: [x, a] → hidden → 1 (WGAN, no sigmoid);
- :class:`AttributeDecoder` Dec: x → hidden (exposed for the feedback and the classifier's input
  augmentation) → attributes, L2-normalised;
- :class:`Feedback` Fb: Dec's hidden state → hidden → hidden.

Deviations, each a guard where the original divides by a norm that can be zero (spec §1.8 item 13):
the decoder's output norm and the weighted-L1 weight ‖d‖ are clamped at ``eps`` (1e-12). They change
nothing unless a norm is exactly zero, where the original produces NaN.
"""
import torch
import torch.nn.functional as F
from torch import nn

from zslfast.distributed import sharded
from zslfast.optim import adam

NORM_EPS = 1e-12
LEAK = 0.2


def init_normal(module, std=0.02):
    """N(0, std) weights and zero biases for every Linear layer in ``module`` (TF-VAEGAN's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
    return module


class Encoder(nn.Module):
    def __init__(self, feature_dim, attribute_dim, latent_dim, hidden=4096):
        super().__init__()
        self.fc1 = nn.Linear(feature_dim + attribute_dim, hidden)
        self.fc2 = nn.Linear(hidden, 2 * latent_dim)
        self.mu = nn.Linear(2 * latent_dim, latent_dim)
        self.logvar = nn.Linear(2 * latent_dim, latent_dim)
        init_normal(self)

    def forward(self, x, a):
        h = F.leaky_relu(self.fc2(F.leaky_relu(self.fc1(torch.cat([x, a], 1)), LEAK)), LEAK)
        return self.mu(h), self.logvar(h)


class Generator(nn.Module):
    """G: [z, a] → hidden → LeakyReLU → features, with a sigmoid output (TF-VAEGAN, SC-EGG: features
    min-max scaled to [0, 1]) or a ReLU output (``output="relu"``: f-CLSWGAN's non-negative
    ResNet features)."""

    def __init__(self, feature_dim, attribute_dim, latent_dim, hidden=4096, output="sigmoid"):
        super().__init__()
        if output not in ("sigmoid", "relu"):
            raise ValueError(f"output must be 'sigmoid' or 'relu', got {output!r}")
        self.fc1 = nn.Linear(latent_dim + attribute_dim, hidden)
        self.fc2 = nn.Linear(hidden, feature_dim)
        self.output = torch.sigmoid if output == "sigmoid" else torch.relu
        init_normal(self)

    def forward(self, z, a, feedback=None, weight=0.0):
        """G(z, a); with ``feedback`` (Fb's output) the hidden state becomes h + weight·feedback. A
        zero weight skips the feedback term entirely (it would add exact zeros)."""
        h = F.leaky_relu(self.fc1(torch.cat([z, a], 1)), LEAK)
        if feedback is not None and weight != 0:
            h = h + weight * feedback
        return self.output(self.fc2(h))


class Critic(nn.Module):
    def __init__(self, feature_dim, attribute_dim, hidden=4096):
        super().__init__()
        self.fc1 = nn.Linear(feature_dim + attribute_dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        init_normal(self)

    def forward(self, x, a):
        return self.fc2(F.leaky_relu(self.fc1(torch.cat([x, a], 1)), LEAK)).squeeze(1)

    def input_gradient(self, x, a):
        """∂D(x, a)/∂x per row in closed form, W1ₓᵀ·(lrelu'(W1·[x; a] + b1) ⊙ w2) [B, C]: the values of
        autograd's gradient with ``create_graph=True`` and, differentiated in the weights, the same
        weight gradients (the slope lrelu' is piecewise constant, so nothing flows through the
        pre-activation), without a double backward through the forward pass: at SC-EGG's sizes
        that saves about a third of the penalty's GEMMs (benchmarks/README.md)."""
        with torch.no_grad():
            pre = self.fc1(torch.cat([x, a], 1))
            slope = torch.where(pre > 0, torch.ones_like(pre), torch.full_like(pre, LEAK))  # at 0: LEAK, as autograd
        return (slope * self.fc2.weight[0]) @ self.fc1.weight[:, :x.shape[1]]


class AttributeDecoder(nn.Module):
    def __init__(self, feature_dim, attribute_dim, hidden=4096):
        super().__init__()
        self.fc1 = nn.Linear(feature_dim, hidden)
        self.fc2 = nn.Linear(hidden, attribute_dim)
        init_normal(self)

    def forward(self, x):
        """(attributes [B, A] with unit L2 norm, hidden state [B, hidden])."""
        hidden = F.leaky_relu(self.fc1(x), LEAK)
        out = self.fc2(hidden)
        return out / out.norm(dim=1, keepdim=True).clamp_min(NORM_EPS), hidden


class Feedback(nn.Module):
    def __init__(self, hidden=4096):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        init_normal(self)

    def forward(self, h):
        return F.leaky_relu(self.fc2(F.leaky_relu(self.fc1(h), LEAK)), LEAK)


def weighted_l1(pred, target):
    """TF-VAEGAN's weighted L1: (1/B)·Σ_b Σ_j |d_bj|³ / ‖d_b‖₂ with d = pred − target. The weight
    |d|²/‖d‖ is not detached (as in the original)."""
    d = pred - target
    return ((d.abs() ** 3).sum(1) / d.norm(dim=1).clamp_min(NORM_EPS)).mean()


def kl_divergence(mu, logvar):
    """KL(N(μ, σ²) ‖ N(0, I)) summed over the latent dimensions and the batch."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()


def vae_loss(recon, x, mu, logvar):
    """[Σ BCE(recon + 1e-12, x) + KL] / B: binary cross-entropy summed over every feature of the batch
    (the released reduction: it dominates the other terms, spec §1.8 item 9)."""
    bce = F.binary_cross_entropy(recon + 1e-12, x, reduction="sum")
    return (bce + kl_divergence(mu, logvar)) / x.shape[0]


def gradient_penalty(critic, real, fake, attributes, generator=None):
    """mean_b (‖∇_x̂ D(x̂, a)‖₂ − 1)² at x̂ = u·real + (1 − u)·fake, u ~ U(0, 1) per row (drawn from
    ``generator`` on the inputs' device). The gradient is taken w.r.t. x̂ only, differentiably, so
    the penalty trains the critic: in closed form where the critic has ``input_gradient``
    (:class:`Critic`), else by autograd with a graph. The penalty is a mean of per-row terms: in a process group every rank
    draws every row's u, takes the gradient norms of its own rows, and the norms are gathered
    (:mod:`zslfast.distributed`)."""
    u = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype, generator=generator)
    mixed = (u * real + (1 - u) * fake).detach()

    def grad_norms(x, a):
        if getattr(critic, "input_gradient", None) is not None:  # a critic that knows it (Critic)
            return critic.input_gradient(x, a).norm(dim=1)
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x, a).sum(), x, create_graph=True)
        return grad.norm(dim=1)

    return ((sharded(grad_norms, mixed, attributes) - 1) ** 2).mean()


def adapt_lambda(lam, gp, high=1.05, low=1.001, factor=1.1):
    """TF-VAEGAN's adaptive GP weight: ×1.1 when the epoch's mean penalty exceeds ``high``, ÷1.1
    when it is below ``low``, unchanged in between."""
    if gp > high:
        return lam * factor
    if gp < low:
        return lam / factor
    return lam


class VAEGAN(nn.Module):
    """TF-VAEGAN's five networks in the dense space (latent = attribute dimension, §1.5)."""

    def __init__(self, feature_dim, attribute_dim, hidden, training=True):
        super().__init__()
        if training:  # E and D only train: a model rebuilt for generation (from_generation) has none
            self.E = Encoder(feature_dim, attribute_dim, attribute_dim, hidden)
        self.G = Generator(feature_dim, attribute_dim, attribute_dim, hidden)
        if training:
            self.D = Critic(feature_dim, attribute_dim, hidden)
        self.Dec = AttributeDecoder(feature_dim, attribute_dim, hidden)
        self.Fb = Feedback(hidden)

    def generation_networks(self):
        """The networks :meth:`generate` needs (G, and Dec and Fb for the feedback): what a trained
        model exports to synthesize features for new classes."""
        return {"G": self.G, "Dec": self.Dec, "Fb": self.Fb}

    @classmethod
    def from_generation(cls, states, device="cpu"):
        """A VAE-GAN rebuilt for generation from the :meth:`generation_networks` state dicts."""
        hidden, feature_dim = states["Dec"]["fc1.weight"].shape
        attribute_dim = states["Dec"]["fc2.weight"].shape[0]
        gan = cls(feature_dim, attribute_dim, hidden, training=False)
        for name, module in gan.generation_networks().items():
            module.load_state_dict(states[name])
        return gan.to(device).eval()

    def generate(self, z, a, weight=0.0, nets=None, source=None):
        """G(z, a); with a non-zero feedback ``weight``, G's second pass through the feedback of
        Dec's (detached) hidden state on ``source``, by default G's first pass. A zero weight skips
        the feedback exactly. ``nets``: the (G, Fb) that train (DDP wrappers in a process group);
        default: G and Fb."""
        g, fb = nets or (self.G, self.Fb)
        if weight == 0:
            return g(z, a)
        if source is None:
            source = self.G(z, a)
        hidden = self.Dec(source)[1].detach()  # no gradient reaches G or Dec through this pass
        return g(z, a, fb(hidden), weight=weight)  # rows positional (sharded), the weight whole

    def augment(self, x):
        """The final classifiers' input [x, Dec(x), Dec.hidden(x)] (§1.6)."""
        return decoder_augment(self.Dec, x)

    def networks(self):
        """The five networks by name, as a stage trains them (their optimisers' names)."""
        return {"E": self.E, "G": self.G, "D": self.D, "Dec": self.Dec, "Fb": self.Fb}


def conditioning_attributes(attributes, norm):
    """The class attributes [K, A] the VAE-GAN conditions on: rows L2-normalised (``norm="l2"``, as
    TF-VAEGAN's loader does; xlsa17's ``att`` rows are unit-norm already) or as given (``"none"``)."""
    att = attributes.to(torch.get_default_dtype())
    return F.normalize(att, dim=1) if norm == "l2" else att


def decoder_inputs(state, device="cpu"):
    """``f(x) = [x, Dec(x), Dec.hidden(x)]`` of an exported decoder ``state`` (the final classifiers'
    inputs at test time)."""
    hidden, feature_dim = state["fc1.weight"].shape
    dec = AttributeDecoder(feature_dim, state["fc2.weight"].shape[0], hidden)
    dec.load_state_dict(state)
    dec = dec.to(device).eval()
    return lambda x: decoder_augment(dec, x.to(device))


def decoder_augment(dec, x):
    """[x, Dec(x), Dec.hidden(x)]: the final classifiers' input (§1.6)."""
    out, hidden = dec(x)
    return torch.cat([x, out, hidden], 1)


# ------------------------------------------------------------------------------ training iteration
def vaegan_optimizers(gan, q):
    """{E, G, D, Dec, Fb} Adam optimisers with the released learning rates and betas (§1.5), fused
    where PyTorch has the kernel (:func:`zslfast.optim.adam`): seven optimiser steps per iteration
    over 4096-wide networks made the default Adam a third of a CPU iteration."""
    device = next(gan.parameters()).device
    betas = (q["beta1"], 0.999)
    return {"E": adam(gan.E.parameters(), device, q["lr"]),  # E: PyTorch's default betas, as released
            "G": adam(gan.G.parameters(), device, q["lr"], betas=betas),
            "D": adam(gan.D.parameters(), device, q["lr"], betas=betas),
            "Dec": adam(gan.Dec.parameters(), device, q["dec_lr"], betas=betas),
            "Fb": adam(gan.Fb.parameters(), device, q["feed_lr"], betas=betas)}


def train_step(gan, x_all, y_all, att, unseen, q, g, state, generator_batch="fresh"):
    """One TF-VAEGAN iteration (spec §1.5) as a stage's manual step of (pass, batches) items
    (:class:`zslfast.engine.samplers.CriticGroups`): a critic step (and a decoder step) on each
    batch but the last, then the E/G (Fb, Dec) step on the last (``generator_batch="fresh"``,
    SC-EGG's), or a critic step on every batch and the generator step on the last critic batch again
    (``"last"``, TF-VAEGAN's). ``q``: the ``gan`` settings;
    ``x_all``/``y_all``: the training features and labels the batches index; ``att``: class
    attributes [K, A]; ``unseen``: the unseen class ids of the unseen guidance term; ``g``: the noise
    stream; ``state["lambda"]``: the adaptive gradient-penalty weight, updated after the critic
    steps from their mean penalty. The step's ``nets`` hold E, G, D, Dec, Fb and the frozen
    guidance classifier ``head`` (scores over all K classes) when a guidance weight
    (``seen_cls_weight``, ``unseen_cls_weight``; 0 when absent, as in TF-VAEGAN) is set.

    The networks run through ``nets`` (the engine's row-parallel wrappers: in a process group on each
    rank's rows, every loss over the gathered batch); the gradient penalty is a per-row composite
    of the critic itself (:func:`gradient_penalty`)."""

    def noise(n):
        return torch.randn(n, att.shape[1], generator=g, device=g.device, dtype=att.dtype)

    if generator_batch not in ("fresh", "last"):
        raise ValueError(f"generator_batch must be 'fresh' or 'last', got {generator_batch!r}")

    def step(item, nets, opt):
        loop, batches = item
        weight = q["a1"] if loop == 1 else 0.0
        generate = (nets.G, nets.Fb)
        gp_sum = 0.0
        critic = batches if generator_batch == "last" else batches[:-1]
        for idx in critic:
            x, a = x_all[idx], att[y_all[idx]]
            if q["recons_weight"] > 0:
                opt.step(q["recons_weight"] * weighted_l1(nets.Dec(x)[0], a), "Dec")
            with torch.no_grad():
                z = noise(x.shape[0])
                if q["encoded_noise"]:
                    mu, logvar = nets.E(x, a)
                    z = mu + torch.exp(0.5 * logvar) * z
                fake = gan.generate(z, a, weight, generate)
            gp = gradient_penalty(gan.D, x, fake, a, generator=g)
            # D on the fake and the real rows in one pass: one weight-gradient product instead of
            # two and their sum (each writes all of D's 8.8 M weights at SUN's size)
            scores = nets.D(torch.cat([fake, x]), torch.cat([a, a]))
            n = x.shape[0]
            loss_d = q["gamma_d"] * (scores[:n].mean() - scores[n:].mean() + state["lambda"] * gp)
            opt.step(loss_d, "D")
            gp_sum = gp_sum + gp.detach()
        state["lambda"] = adapt_lambda(state["lambda"], float(gp_sum) / len(critic))

        with opt.frozen(*(("D", "Dec") if q["freeze_dec"] else ("D",))):
            idx = batches[-1]
            x, y = x_all[idx], y_all[idx]
            a = att[y]
            mu, logvar = nets.E(x, a)
            recon = gan.generate(mu + torch.exp(0.5 * logvar) * noise(x.shape[0]), a, weight, generate)
            vae = vae_loss(recon, x, mu, logvar)
            losses = {"vae": vae}
            terms = []  # the weighted guidance terms, summed after the adversarial one as before
            if q.get("seen_cls_weight", 0) > 0:
                losses["cls_seen"] = F.cross_entropy(nets.head(recon), y)
                terms.append(q["seen_cls_weight"] * losses["cls_seen"])
            if q.get("unseen_cls_weight", 0) > 0:
                u = unseen[torch.randint(unseen.numel(), (x.shape[0],), generator=g, device=g.device).to(unseen.device)]
                losses["cls_unseen"] = F.cross_entropy(nets.head(nets.G(noise(x.shape[0]), att[u])), u)
                terms.append(q["unseen_cls_weight"] * losses["cls_unseen"])
            if q["encoded_noise"]:  # the adversarial fake is the VAE reconstruction (released)
                fake = recon
            else:  # a separate G(ε, a) for D and Dec, drawn after the unseen-class noise as the original
                # does; its feedback (loop 1) comes from Dec(recon), not Dec(G(ε, a)), as released
                fake = gan.generate(noise(x.shape[0]), a, weight, generate, source=recon)
            loss = vae - q["gamma_g"] * nets.D(fake, a).mean()
            for term in terms:
                loss = loss + term
            if q["recons_weight"] > 0:
                loss = loss + q["recons_weight"] * weighted_l1(nets.Dec(fake)[0], a)
            opt.step(loss, "E", "G", *(["Fb"] if weight != 0 else []),
                     *(["Dec"] if q["recons_weight"] > 0 and not q["freeze_dec"] else []))
        return {"critic": loss_d.detach(), "generator": loss.detach(), **{k: v.detach() for k, v in losses.items()}}

    return step
