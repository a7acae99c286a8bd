"""GRW-CZSL: "Continual Zero-Shot Learning through Semantically Guided Generative Random Walks"
(Zhang et al., ICCV 2023; reference note grw_czsl.md, section numbers below refer to it).

Classes arrive in tasks (:class:`zslfast.data.ContinualSplit`). A generator G(z, a) produces visual
features from class attributes, and an embedder D(a) maps attributes to visual prototypes; every
classification is the scaled cosine between a feature and the prototypes D(a_k) (§2). Per batch, D
takes one step on its loss (§3.1) and G one step on the seen loss, the creativity loss on features
generated from hallucinated attributes, and four random-walk losses (§3.2–3.4). Hallucinated
attributes are interpolations of the batch's attributes or rows of a learnable dictionary (§2). Real
features of old classes are replayed from a buffer (§1.2). After each task the prototypes of all C
classes are scored on the test images: S over the seen-so-far classes, U over the rest (§1.3, §5).

Conscious choices (§7), each a config key:
- ``d_real_alignment: all_pairs`` (default, both branches of the original): D's real-alignment term
  −log mean τ·cos(D(a_y), x) is the mean over every (prototype, feature) pair of the batch, because
  the original compares a [B, 1, 2048] prototype tensor with [B, 2048] features and
  ``F.cosine_similarity`` broadcasts that to B×B cosines. ``matched`` averages over matched pairs
  (b, b) only, which is what the formula says. The fake term and G's alignment terms are matched in
  the original too ([B, 1, 2048] against [B, 1, 2048]) and are matched here.
- ``schedule: one_step`` (default): one G step per batch on all G losses after D's step (the
  ``beta`` branch, which runs on modern PyTorch). ``two_step`` is the ``main`` branch's schedule: a G
  step on the seen losses, then, without zeroing the gradients, a second step on the creativity and
  walk losses, whose forward passes run on the once-updated G as in ``main``; the seen gradients
  are therefore applied twice (§3.5, §7.3).
- ``g_prototypes: after_d_step`` (default, ``beta``): the prototypes D(A_seen) in G's seen and
  creativity losses are recomputed after D's update. ``before_d_step`` is ``main``: G's losses reuse
  the prototypes computed for D's loss, before D's update (the stale activations that make
  ``main`` fail on PyTorch >= 1.5, §7.5; here they are detached, which gives the same G gradients).
- Loss formulas follow ``main`` (the source of the paper's Table 1): the neighbour-correlation loss
  is a sum over the classes present in the batch × 3 neighbours with weight 20 and the CUB margin
  0.04; the Euclidean loss sums over present classes and divides by K (§3.2, §7.4). Class means are
  true per-class means of the generated batch. ``lsr.reduction: mean`` averages the same terms
  instead of summing them. No setting reproduces ``beta``'s two losses: its "class means" broadcast
  to a [B, K, 2048] tensor in which row b holds, in the column of b's class, the sum of the whole
  batch divided by that class's count and zeros elsewhere, and its losses average over all B×K
  rows, zeros included, with margin 0.01 for every dataset and weight 1 (§3.2, §10).
- So the default (``one_step``, ``after_d_step``, ``main``'s loss formulas, ``all_pairs``) reproduces
  neither branch exactly; ``--set schedule=two_step --set g_prototypes=before_d_step --set
  log_eps=0`` reproduces ``main``.
- The walks run on raw generator outputs with temperature 1 over cosines, like the original (§7.6);
  ``class_visit_loss`` is not added (it is dead code in the original, §7.7); the "discr" walks train
  G only (§7.8).
- The learnable dictionary has one row per class of the whole dataset, is rebuilt every task and
  renormalised to max_norm = the largest attribute norm on lookup (§7.9).
- log(mean cosine) gets an ε (``log_eps``) so that a dead embedder cannot give −inf (§7.10).
- Features are used raw, as in the original (§7.11); the replay buffer keeps the first q rows per
  class (§7.12); evaluation scores all C classes without calibration (§7.14).
- There is no model selection: every task trains a fixed number of epochs and is evaluated after
  the last one, as in the original, so no test data influences training (selection mode ``fixed``;
  ``--select-on-test`` has nothing to select and is refused before the data is loaded).

Distributed (``torchrun``; the engine's row-parallel modules, :mod:`zslfast.engine.recipe`): nearly
every GRW loss is a batch-level quantity (random walks over all generated points, class means, the
log of a batch-mean cosine), so no loss is split. Every network forward (D on the K class attribute
rows; G on the batch's seen features, the hallucinated ones and the four per-class sample sets of
the walks) runs on each rank's rows, the outputs are gathered, and every loss, walks included, is
computed on the gathered tensors by every rank: the walks' O(steps·K·M²) cost is therefore not
divided, the networks' is. The learnable dictionary is looked up whole on every rank (its max-norm
renormalisation changes the rows it reads, in place, alike everywhere). Task splits and the replay
buffer are the same on every rank; the task evaluation is sharded.

Efficiency the original lacks (§8): walks propagate Q_{t+1} = Q_t·P_xx through the fused
``random_walk_landing`` operator instead of forming P_xx^t; the seen-class prototypes D(A_seen) are
computed once per step and scored with one cosine GEMM (``pairwise_distance``) instead of running D on
B×K repeated rows; the neighbour-correlation and Euclidean losses are segment means and gathers, not
Python loops over classes; evaluation uses the blocked ``nearest_prototype``. The original
formulation of those pieces is a test oracle and the benchmark baseline outside the package
(``tests/oracles/grw_original.py``, ``benchmarks/bench_train.py --method grw``).
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from zslfast import ops
from zslfast.engine.checkpoint import cpu_state
from zslfast.engine.continual import ContinualMethod
from zslfast.engine.export import Scorer, masked
from zslfast.engine.recipe import Stage, stage_step
from zslfast.errors import ZSLError
from zslfast.nn import MLP, class_means, init_linear, scaled_cosine
from zslfast.optim import adam
from zslfast.config.settings import Bool, Choice, Float, Int, Numbers, Section, Width

ATTRIBUTE_GENERATION = ("interpolation", "learnable")
SCHEDULES = ("one_step", "two_step")


def _per_generation_method(spec):
    return Section(**{name: spec for name in ATTRIBUTE_GENERATION})


SETTINGS = Section(
    extends=("continual", "optim", "epochs", "batches"), batch_size=Int(min=2),  # batches of one are skipped
    attribute_generation=Choice(*ATTRIBUTE_GENERATION),
    schedule=Choice(*SCHEDULES),
    g_prototypes=Choice("after_d_step", "before_d_step"),
    d_real_alignment=Choice("all_pairs", "matched"),
    hidden=Width(),
    dic_lr=Float(min=0, min_open=True),
    scale=Float(min=0, min_open=True),
    cls_weight=Float(min=0),
    log_eps=Float(min=0),
    euclidean=Bool(),
    neighbours=Int(min=1),
    lsr=Section(weight=Float(min=0), reduction=Choice("sum", "mean"), margin=Float(min=0), lower=Float(min=0)),
    interpolation_range=Numbers(Float(min=0, max=1), length=2, increasing=True),
    creative_weight=_per_generation_method(Float(min=0)),
    grw_creative_weight=_per_generation_method(Float(min=0)),
    rw=Section(steps=Int(min=0), decay=Float(min=0), samples_per_class=Int(min=1),
               temperature=Float(min=0, min_open=True), visit_weight=Float(min=0),
               weights=Section(discr_imitative=Float(min=0), discr_real=Float(min=0), gen_imitative=Float(min=0))),
)


# ----------------------------------------------------------------------------------------- networks
class Generator(nn.Module):
    """G(z, a) = Sigmoid(W2 · ReLU(W1 · [z, a] + b1) + b2), z of the attribute's size (§2).

    ``forward(z, a)`` takes one attribute row per sample; ``forward(z, index, classes=att)`` takes
    per-class attributes [n_cls, d_a] and the class row of each sample ``index`` [n]: the attribute
    half of the first layer is then computed once per class.
    """

    def __init__(self, attribute_dim, feature_dim, hidden=1024):
        super().__init__()
        self.attribute_dim = attribute_dim
        self.fc1 = nn.Linear(2 * attribute_dim, hidden)
        self.fc2 = nn.Linear(hidden, feature_dim)
        init_linear(self, "xavier")

    def forward(self, z, a, classes=None):
        d = self.attribute_dim
        index = None
        if classes is not None:
            a, index = classes, a
        cond = torch.addmm(self.fc1.bias, a, self.fc1.weight[:, d:].T)  # per attribute row
        if index is not None:
            # index_select: its backward sums repeated rows in a fixed order on the CPU (indexing's
            # backward, index_put_ with accumulate, does not), so runs with one seed are identical
            cond = cond.index_select(0, index)
        h = torch.relu(torch.addmm(cond, z, self.fc1.weight[:, :d].T))
        return torch.sigmoid(self.fc2(h))


class GRWModel(nn.Module):
    """The generator and the attribute embedder of one continual run."""

    def __init__(self, attribute_dim, feature_dim, hidden=1024):
        super().__init__()
        self.generator = Generator(attribute_dim, feature_dim, hidden)
        # D(a) = ReLU(W2 · ReLU(W1 · a + b1) + b2): class attributes to visual prototypes (§2)
        self.embedder = MLP([attribute_dim, hidden, feature_dim], init="xavier")


def generate_per_class(generator, att, n, noise):
    """n samples of ``generator`` (a module or the stage's row-parallel one) for every row of
    ``att`` [K, d_a], class-major ([K·n, D])."""
    k = att.shape[0]
    z = torch.randn(k * n, att.shape[1], generator=noise, device=att.device, dtype=att.dtype)
    return generator(z, torch.arange(k, device=att.device).repeat_interleave(n), classes=att)


# ------------------------------------------------------------------------------------------- losses
def cosine_scores(x, prototypes, scale):
    """scale · cos(x_b, p_k), [B, K] (one GEMM through ``ops.pairwise_distance``)."""
    return scaled_cosine(x, prototypes, scale)


def log_mean_cosine(a, b, scale, eps):
    """log(mean_b scale·cos(a_b, b_b) + eps), the alignment term of §3.1–3.2."""
    return torch.log(scale * F.cosine_similarity(a, b, dim=1).mean() + eps)


def attribute_neighbours(att, n=3):
    """The n classes with the highest attribute cosine to each class (itself first) and those
    cosines σ: ([K, n] indices, [K, n] values)."""
    a = F.normalize(att, dim=1)
    sim = a @ a.T
    values, index = sim.topk(min(n, att.shape[0]), dim=1)
    return index, values


def random_walk_loss(centers, points, steps, decay, target, visit_weight=1.0, temperature=1.0, clamp=1e-10):
    """The generative random-walk loss of §3.4: Σ_t γ^t ℓ_t + visit_weight · L_visit.

    Walks start at each center, step to a point, take t point-to-point steps and land on a center
    (T_t = P_cx·P_xx^t·P_xc, t = 0..steps). ``target="diag"``: ℓ_t = −mean_i log T_t[i,i] (return to
    the start); ``"uniform"``: ℓ_t = −mean_ij log T_t[i,j] (land anywhere alike). L_visit =
    −mean_j log v_j with v the mean over centers of P_cx (every point visited alike).
    Probabilities are clamped to [clamp, 1−clamp] before the logs, as in the original.
    """
    if target not in ("diag", "uniform"):
        raise ValueError(f"target must be 'diag' or 'uniform', got {target!r}")
    landing = ops.random_walk_landing(centers, points, steps, temperature).clamp(clamp, 1 - clamp).log()
    if target == "diag":
        per_step = -landing.diagonal(dim1=1, dim2=2).mean(1)
    else:
        per_step = -landing.mean((1, 2))
    weights = decay ** torch.arange(steps + 1, device=per_step.device, dtype=per_step.dtype)
    loss = (weights * per_step).sum()
    if visit_weight:
        visit = ops.transition_matrix(centers, points, temperature).mean(0)
        loss = loss + visit_weight * -visit.clamp(clamp, 1 - clamp).log().mean()
    return loss


class Formulation:
    """How the hot pieces of a GRW step are computed. This class is zslfast's formulation (§8);
    the original code's (``tests/oracles/grw_original.py``) is the test oracle and benchmark baseline."""

    name = "zslfast"
    runs_embedder = False  # seen_scores ignores ``embedder`` and uses the given prototypes

    def real_alignment(self, protos_y, x, scale, eps, mode):
        """log(mean τ·cos(D(a_y), x) + ε), D's real-alignment term (§3.1). ``all_pairs``: the mean over
        all B×B (prototype, feature) pairs of the batch, which equals τ times the dot product of the
        mean unit prototype and the mean unit feature: O(B·D) instead of the original's B×B×D
        broadcast. ``matched``: the mean over the pairs (b, b)."""
        if mode == "matched":
            return log_mean_cosine(protos_y, x, scale, eps)
        p = F.normalize(protos_y, dim=1).mean(0)
        q = F.normalize(x, dim=1).mean(0)
        return torch.log(scale * (p @ q) + eps)

    def seen_scores(self, embedder, att_seen, prototypes, x, scale):
        """scale·cos(x_b, D(a_k)) for k < K, [B, K], from the prototypes computed once per step."""
        return cosine_scores(x, prototypes, scale)

    def walk_loss(self, centers, points, steps, decay, target, visit_weight, temperature):
        return random_walk_loss(centers, points, steps, decay, target, visit_weight, temperature)

    def euclidean_loss(self, x_gen, y, mu_seen):
        """(1/K) Σ_{k in batch} ‖mean_{b: y_b=k} x̃_b − μ_k‖₂ (§3.2)."""
        k = mu_seen.shape[0]
        means, counts = class_means(x_gen, y, k)
        present = counts > 0
        return (means[present] - mu_seen[present]).norm(dim=1).sum() / k

    def correlation_loss(self, x_gen, y, mu_seen, neighbours, sigma, margin, lower, weight, reduction):
        """The neighbour-correlation loss of §3.2: the cosine c_kn between class k's generated mean
        and the real mean of its n-th attribute neighbour must stay within [σ_kn − lower, σ_kn + margin]."""
        means, counts = class_means(x_gen, y, mu_seen.shape[0])
        present = torch.nonzero(counts > 0).squeeze(1)
        nb = neighbours[present]
        c = (F.normalize(means[present], dim=1).unsqueeze(1) * F.normalize(mu_seen, dim=1)[nb]).sum(-1)
        s = sigma[present]
        pen = torch.relu(c - (s + margin)) ** 2 + torch.relu((s - lower) - c) ** 2
        return weight * (pen.sum() if reduction == "sum" else pen.mean())


# ------------------------------------------------------------------------------------------ trainer
class GRWTrainer:
    """One continual GRW run (the continual family's learner, :mod:`zslfast.engine.continual`): the
    networks, the per-task optimisers, the class means and the step.

    Args:
        data: a :class:`zslfast.data.ZSLDataset` already on the training device.
        cfg: the resolved ``grw`` config.
        ctx: the run context (device; ``init`` stream for the networks, ``noise`` stream on the device
            for every draw of a step).
        formulation: a :class:`Formulation` (default: zslfast's; tests and benchmarks pass the
            original's, ``tests/oracles/grw_original.py``).
    """

    def __init__(self, data, cfg, ctx, formulation=None):
        device = ctx.device
        self.data, self.cfg, self.device = data, cfg, device
        self.method = cfg["attribute_generation"]
        self.f = formulation or Formulation()
        with ctx.init_scope():
            self.model = GRWModel(data.attribute_dim, data.feature_dim, cfg["hidden"])
        self.model.to(device)
        self.att = data.attributes.to(device)
        self.mu = torch.zeros(data.num_classes, data.feature_dim, device=device)  # real class means
        self.gen = ctx.rng("noise", device)
        self.dictionary = None
        self.num_seen = 0
        self._batch_step = None

    # --------------------------------------------------------------------------- per task
    def task_stage(self, name, task, batches, epochs):
        """Start ``task`` (:meth:`start_task` on its training samples) and declare its training."""
        new = task.train.to(self.device)
        self.start_task(task.seen_classes.numel(), task.new_classes, self.data.features[new], self.data.labels[new])
        return self.stage(name, batches, epochs, lambda idx: (self.data.features[idx], self.data.labels[idx]))

    def stage(self, name, batches, epochs, read):
        """The current task's training stage: D, G and (learnable attributes) the dictionary with
        their own optimisers; its manual step (:meth:`train_step`) reads a batch with ``read``."""
        modules = {"embedder": self.model.embedder, "generator": self.model.generator}
        optimizers = {"d": self.opt_d, "g": self.opt_g}
        if self.dictionary is not None:
            modules["dictionary"], optimizers["dict"] = self.dictionary, self.opt_dict
        return Stage(name, modules, optimizers, batches, epochs=epochs,
                     step=lambda batch, nets, opts: self.train_step(*read(batch), nets, opts))

    def start_task(self, seen, new_classes, new_x, new_y):
        """Prepare task training: K = ``seen`` classes, real means of the new classes from their
        training features, fresh optimisers (the original re-creates them every task), neighbour lists
        and, for the learnable method, a freshly initialised dictionary."""
        cfg = self.cfg
        self.num_seen = seen
        self._batch_step = None
        means, counts = class_means(new_x, new_y, self.data.num_classes)
        new = new_classes.to(self.device)
        if (counts[new] == 0).any():
            raise ZSLError(f"task with classes {new.tolist()}: some classes have no training samples")
        self.mu[new] = means[new]
        self.neighbours, self.sigma = attribute_neighbours(self.att[:seen], cfg["neighbours"])
        m = self.model
        self.opt_d = adam(m.embedder.parameters(), self.device, cfg["lr"], cfg["weight_decay"])
        self.opt_g = adam(m.generator.parameters(), self.device, cfg["lr"], cfg["weight_decay"])
        if self.method == "learnable":
            c, d_a = self.att.shape
            lo, hi = cfg["interpolation_range"]
            i = torch.randint(seen, (c,), generator=self.gen, device=self.device)
            j = torch.randint(seen, (c,), generator=self.gen, device=self.device)
            alpha = lo + (hi - lo) * torch.rand(c, 1, generator=self.gen, device=self.device, dtype=self.att.dtype)
            self.dictionary = nn.Embedding(c, d_a, max_norm=float(self.att.norm(dim=1).max())).to(self.att)
            with torch.no_grad():
                self.dictionary.weight.copy_(alpha * self.att[i] + (1 - alpha) * self.att[j])
            self.opt_dict = adam(self.dictionary.parameters(), self.device, cfg["dic_lr"], cfg["weight_decay"])

    def hallucinate(self, y, dictionary=None):
        """One hallucinated attribute per batch element (§2): an interpolation of two batch
        attributes with α ~ U[lo, hi], or a uniformly drawn row of ``dictionary`` (default: the
        learnable dictionary itself)."""
        b = y.shape[0]
        if self.method == "learnable":
            rows = torch.randint(self.att.shape[0], (b,), generator=self.gen, device=self.device)
            # keyword-only: every rank looks up (and max-norm renormalises, in place) the same rows
            return (dictionary or self.dictionary)(input=rows)
        lo, hi = self.cfg["interpolation_range"]
        a = self.att[y]
        p1 = torch.randperm(b, generator=self.gen, device=self.device)
        p2 = torch.randperm(b, generator=self.gen, device=self.device)
        alpha = lo + (hi - lo) * torch.rand(b, 1, generator=self.gen, device=self.device, dtype=a.dtype)
        return alpha * a[p1] + (1 - alpha) * a[p2]

    # --------------------------------------------------------------------------- losses
    def d_loss(self, x, y, x_fake, protos):
        """L_D (§3.1): −log mean τ·cos(D(a_y), x) (over all pairs or matched pairs,
        ``d_real_alignment``) + log mean τ·cos(D(a_y), x̃) + α·CE over the K seen prototypes +
        MSE(D(A_seen), μ_seen); ``x_fake`` is a detached generator batch, ``protos`` = D(A_seen)."""
        cfg, k = self.cfg, self.num_seen
        scale, eps = cfg["scale"], cfg["log_eps"]
        scores = self.f.seen_scores(self.model.embedder, self.att[:k], protos, x, scale)
        p_y = protos.index_select(0, y)  # D(a_y) per sample (index_select: see Generator.forward)
        return (-self.f.real_alignment(p_y, x, scale, eps, cfg["d_real_alignment"])
                + log_mean_cosine(p_y, x_fake, scale, eps)
                + cfg["cls_weight"] * F.cross_entropy(scores, y) + F.mse_loss(protos, self.mu[:k]))

    def g_seen_loss(self, x_gen, y, protos, embedder):
        """L_G,seen (§3.2) of generated features ``x_gen`` for labels ``y``, against the fixed
        prototypes ``protos`` = D(A_seen) (``embedder`` is the D that computed them)."""
        cfg, k = self.cfg, self.num_seen
        scale, lsr = cfg["scale"], cfg["lsr"]
        scores = self.f.seen_scores(embedder, self.att[:k], protos, x_gen, scale)
        loss = (-log_mean_cosine(protos.index_select(0, y), x_gen, scale, cfg["log_eps"])
                + cfg["cls_weight"] * F.cross_entropy(scores, y)
                + self.f.correlation_loss(x_gen, y, self.mu[:k], self.neighbours, self.sigma, lsr["margin"],
                                          lsr["lower"], lsr["weight"], lsr["reduction"]))
        if cfg["euclidean"]:
            loss = loss + self.f.euclidean_loss(x_gen, y, self.mu[:k])
        return loss

    def g_creative_loss(self, x, y, protos, embedder, nets):
        """The creativity loss (§3.3) against the prototypes ``protos`` (computed by ``embedder``),
        and the four random-walk losses (§3.4), with the stage's row-parallel ``nets``. Returns
        (total, the weighted terms, detached)."""
        cfg, k, rw = self.cfg, self.num_seen, self.cfg["rw"]
        scale, n = cfg["scale"], rw["samples_per_class"]
        att_h = self.hallucinate(y, getattr(nets, "dictionary", None))
        z = torch.randn(y.shape[0], att_h.shape[1], generator=self.gen, device=self.device, dtype=att_h.dtype)
        x_h = F.normalize(nets.generator(z, att_h), dim=1)
        scores_h = self.f.seen_scores(embedder, self.att[:k], protos, x_h, scale)
        creativity = (-cfg["creative_weight"][self.method] * F.log_softmax(scores_h, dim=1).mean() / k
                      - scale * F.cosine_similarity(self.model.embedder(att_h), x_h, dim=1).mean())

        def walk(centers, points, target):
            return self.f.walk_loss(centers, points, rw["steps"], rw["decay"], target, rw["visit_weight"],
                                    rw["temperature"])

        def fresh_prototypes():
            samples = generate_per_class(nets.generator, self.att[:k], n, self.gen)
            return samples, samples.view(k, n, -1).mean(1)

        w = rw["weights"]
        terms = {"creativity": creativity}
        samples, centers = fresh_prototypes()
        terms["rw_discr_imitative"] = w["discr_imitative"] * walk(centers, samples, "diag")
        _, centers = fresh_prototypes()
        terms["rw_discr_real"] = w["discr_real"] * walk(centers[torch.unique(y)], x, "diag")
        samples, centers = fresh_prototypes()
        terms["rw_gen_imitative"] = w["gen_imitative"] * walk(centers, samples, "diag")
        _, centers = fresh_prototypes()
        terms["rw_gen_creative"] = cfg["grw_creative_weight"][self.method] * walk(centers, x_h, "uniform")
        return sum(terms.values()), {key: v.detach() for key, v in terms.items()}

    # --------------------------------------------------------------------------- one batch
    def train_step(self, x, y, nets, opts):
        """One training batch, the stage's manual step: a D step, then the G step(s) of the
        configured schedule. Returns the loss values, detached tensors (synchronised only when the
        caller reads them): ``d``, ``g_seen``, ``g_creative`` and the weighted terms of the latter
        (``creativity`` and the four ``rw_*`` walks).

        Distributed (the engine's row-parallel ``nets``): nearly every GRW loss is a batch-level
        quantity, so every loss is computed on gathered tensors by every rank; the networks run on
        each rank's rows."""
        m, k = self.model, self.num_seen
        att = self.att[:k]
        z = torch.randn(y.shape[0], self.att.shape[1], generator=self.gen, device=self.device, dtype=self.att.dtype)
        with torch.no_grad():
            x_fake = nets.generator(z, y, classes=att)
        protos_d = nets.embedder(att)
        before = self.cfg["g_prototypes"] == "before_d_step"
        # The original formulation runs D itself on repeated rows, so it needs D's pre-update weights.
        embedder_g = (copy.deepcopy(m.embedder).requires_grad_(False) if before and self.f.runs_embedder
                      else m.embedder)
        loss_d = self.d_loss(x, y, x_fake, protos_d)
        opts.step(loss_d, "d")

        # G step(s): D is fixed, and D(A_seen) is a constant for G (it depends on no G output).
        g_opts = ("g", "dict") if self.dictionary is not None else ("g",)
        with opts.frozen("embedder"):
            if before:
                protos = protos_d.detach()
            else:
                with torch.no_grad():
                    protos = m.embedder(att)
            x_gen = nets.generator(z, y, classes=att)
            loss_seen = self.g_seen_loss(x_gen, y, protos, embedder_g)
            if self.cfg["schedule"] == "two_step":
                opts.step(loss_seen, "g")  # the seen gradients stay and are applied again below (§3.5)
                loss_cr, terms = self.g_creative_loss(x, y, protos, embedder_g, nets)
                opts.step(loss_cr, *g_opts, zero=False)
            else:
                loss_cr, terms = self.g_creative_loss(x, y, protos, embedder_g, nets)
                opts.step(loss_seen + loss_cr, *g_opts)
        return {"d": loss_d.detach(), "g_seen": loss_seen.detach(), "g_creative": loss_cr.detach(), **terms}

    def step(self, x, y):
        """One training batch (x, y) of the current task outside a run (tests, benchmarks): the
        task stage's step, as the engine runs it."""
        if self._batch_step is None:
            self._batch_step = stage_step(self.stage("step", None, 1, lambda batch: batch))
        return self._batch_step((x, y))

    # --------------------------------------------------------------------------- evaluation
    def predictor(self):
        """``predict(features) -> class ids``: the nearest prototype D(a_c) by cosine over all C
        classes (§5), the prototypes computed once."""
        with torch.no_grad():
            protos = self.model.embedder(self.att)
        return lambda x: ops.nearest_prototype(x, protos, "cosine")

    def export(self, split):
        """(checkpointed state, exported model): the embedder after the last trained task, the class
        embeddings and the classes still unseen then."""
        state = {"model": cpu_state(self.model), "class_means": self.mu.cpu()}
        if self.dictionary is not None:
            state["dictionary"] = self.dictionary.weight.detach().cpu()
        last = split.task(split.trained_tasks[-1]) if split.trained_tasks else None
        model = {"embedder": cpu_state(self.model.embedder), "feature_dim": self.data.feature_dim,
                 "unseen_after_training": last.unseen_classes if last is not None else torch.arange(self.data.num_classes)}
        return state, model


class GRW(ContinualMethod):
    name = "grw"
    settings = SETTINGS
    min_batch = 2  # the original skips batches of one sample

    def learner(self, data, config, ctx):
        return GRWTrainer(data, config, ctx)

    def with_classes(self, record, names, embeddings, device="cpu", seed=0):
        """New classes are the unseen ones; the classes the last trained task had seen are kept."""
        from zslfast.engine.export import replace_classes

        k = len(record["classes"]["names"])
        still_unseen = torch.zeros(k, dtype=torch.bool)
        still_unseen[record["model"]["unseen_after_training"]] = True
        out = replace_classes(record, names, embeddings, torch.nonzero(~still_unseen).flatten())
        out["model"]["unseen_after_training"] = out["classes"]["unseen"]
        return out

    def scorer(self, record, device="cpu"):
        """The model after the last trained task: cosine similarity to the prototypes D(a_c) of every
        class; GZSL predicts the nearest prototype (as the run's per-task evaluation), ZSL the nearest
        among the classes still unseen after the last trained task."""
        m = record["model"]
        emb = record["classes"]["embeddings"].to(device)
        embedder = MLP([emb.shape[1], record["config"]["hidden"], m["feature_dim"]], init="xavier")
        embedder.load_state_dict(m["embedder"])
        with torch.no_grad():
            protos = embedder.to(device).eval()(emb)
        unseen = m["unseen_after_training"].to(device)

        def gzsl(x):
            return -ops.pairwise_distance(x.to(device), protos, "cosine")

        return Scorer(torch.no_grad()(gzsl), torch.no_grad()(lambda x: masked(gzsl(x), unseen)),
                      predict_gzsl=lambda x: ops.nearest_prototype(x.to(device), protos, "cosine"))
