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

Distributed (``torchrun``, :mod:`zslfast.engine.distributed`): nearly every GRW loss is a
batch-level quantity (random walks over all generated points, class means, the log of a batch-mean
cosine), so no loss is split. D's step runs on every rank alike (its network sees only the K class
attribute rows; the per-sample terms are cosines), its fake features generated in shards. Every
generator forward (the batch's seen features, the hallucinated ones, the four per-class sample
sets of the walks) runs on each rank's rows, the outputs are gathered, and every G loss, walks
included, is computed on the gathered tensors by every rank: the walks' O(steps·K·M²) cost is
therefore not divided, the generator's is. The learnable dictionary is a DDP module like G and D.
Task splits and the replay buffer are the same on every rank; the task evaluation is sharded.

Efficiency the original lacks (§8): walks propagate Q_{t+1} = Q_t·P_xx through the fused
``random_walk_landing`` operator instead of forming P_xx^t; the seen-class prototypes D(A_seen) are
computed once per step and scored with one cosine GEMM (``pairwise_distance``) instead of running D on
B×K repeated rows; the neighbour-correlation and Euclidean losses are segment means and gathers, not
Python loops over classes; evaluation uses the blocked ``nearest_prototype``. The original
formulation of those pieces is a test oracle and the benchmark baseline outside the package
(``tests/oracles/grw_original.py``, ``benchmarks/bench_train.py --method grw``).
"""
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from zslfast import ops
from zslfast.data.continual import CONTINUAL_SETTINGS, ContinualSplit, ReplayBuffer
from zslfast.engine.checkpoint import cpu_state
from zslfast.engine.continual import run_continual
from zslfast.engine.distributed import parallel, sharded
from zslfast.engine.export import Scorer, masked
from zslfast.engine.method import Method, MethodResult
from zslfast.engine.selection import Selector
from zslfast.errors import ZSLError
from zslfast.nn import MLP, class_means, init_linear, scaled_cosine
from zslfast.optim import adam
from zslfast.settings import Bool, Choice, Float, Int, Numbers, Section

ATTRIBUTE_GENERATION = ("interpolation", "learnable")
SCHEDULES = ("one_step", "two_step")


def _per_generation_method(spec):
    return Section(**{name: spec for name in ATTRIBUTE_GENERATION})


SETTINGS = Section(
    extends=("optim", "epochs", "batches"), batch_size=Int(min=2),  # batches of one are skipped, as the original
    attribute_generation=Choice(*ATTRIBUTE_GENERATION),
    schedule=Choice(*SCHEDULES),
    g_prototypes=Choice("after_d_step", "before_d_step"),
    d_real_alignment=Choice("all_pairs", "matched"),
    classes_per_task=Int(min=1, nullable=True),
    num_tasks=Int(min=2, nullable=True),
    split=Section(test_size=Float(min=0, max=1, min_open=True, max_open=True), seed=Int(min=0)),
    buffer_size=Int(min=0),
    hidden=Int(min=1),
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

    ``forward(z, a, index)`` takes per-class attributes ``a`` [n_cls, d_a] and the class row of each
    sample ``index`` [n]: the attribute half of the first layer is then computed once per class.
    """

    def __init__(self, attribute_dim, feature_dim, hidden=1024):
        super().__init__()
        self.attribute_dim = attribute_dim
        self.fc1 = nn.Linear(2 * attribute_dim, hidden)
        self.fc2 = nn.Linear(hidden, feature_dim)
        init_linear(self, "xavier")

    def forward(self, z, a, index=None):
        d = self.attribute_dim
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

    def generate_per_class(self, att, n, generator, net=None):
        """n samples for every row of ``att`` [K, d_a], class-major ([K·n, D]), by ``net`` (default:
        the generator; in a process group its DDP wrapper, each rank generating its rows)."""
        k = att.shape[0]
        z = torch.randn(k * n, att.shape[1], generator=generator, device=att.device, dtype=att.dtype)
        index = torch.arange(k, device=att.device).repeat_interleave(n)
        return sharded(lambda zi, ii: (net or self.generator)(zi, att, ii), z, index)


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
    """One continual GRW run: the networks, the per-task optimisers, the class means and the step.

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
        # In a process group: D's loss is computed by every rank alike (it runs on K class rows), G's
        # forward passes are sharded by rows and its losses taken on the gathered batch.
        self.embedder, self.generator = parallel(self.model.embedder), parallel(self.model.generator)
        self.att = data.attributes.to(device)
        self.mu = torch.zeros(data.num_classes, data.feature_dim, device=device)  # real class means
        self.gen = ctx.rng("noise", device)
        self.dictionary = None
        self.num_seen = 0

    # --------------------------------------------------------------------------- per task
    def modules(self):
        """What a task's training changes (saved by checkpoints): the model, the optimisers of the
        current task and, for learnable attributes, the dictionary and its optimiser."""
        out = {"model": self.model, "optimizer_d": self.opt_d, "optimizer_g": self.opt_g}
        if self.dictionary is not None:
            out.update({"dictionary": self.dictionary, "optimizer_dict": self.opt_dict})
        return out

    def start_task(self, seen, new_classes, new_x, new_y):
        """Prepare task training: K = ``seen`` classes, real means of the new classes from their
        training features, fresh optimisers (the original re-creates them every task), neighbour lists
        and, for the learnable method, a freshly initialised dictionary."""
        cfg = self.cfg
        self.num_seen = seen
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
            self.lookup = parallel(self.dictionary)
            self.opt_dict = adam(self.dictionary.parameters(), self.device, cfg["dic_lr"], cfg["weight_decay"])

    def hallucinate(self, y):
        """One hallucinated attribute per batch element (§2): an interpolation of two batch
        attributes with α ~ U[lo, hi], or a uniformly drawn dictionary row."""
        b = y.shape[0]
        if self.method == "learnable":
            return self.lookup(torch.randint(self.att.shape[0], (b,), generator=self.gen, device=self.device))
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

    def g_creative_loss(self, x, y, protos, embedder):
        """The creativity loss (§3.3) against the prototypes ``protos`` (computed by ``embedder``),
        and the four random-walk losses (§3.4). Returns (total, the weighted terms, detached)."""
        cfg, k, rw = self.cfg, self.num_seen, self.cfg["rw"]
        scale, n = cfg["scale"], rw["samples_per_class"]
        att_h = self.hallucinate(y)
        z = torch.randn(y.shape[0], att_h.shape[1], generator=self.gen, device=self.device, dtype=att_h.dtype)
        x_h = F.normalize(sharded(self.generator, z, att_h), dim=1)
        scores_h = self.f.seen_scores(embedder, self.att[:k], protos, x_h, scale)
        creativity = (-cfg["creative_weight"][self.method] * F.log_softmax(scores_h, dim=1).mean() / k
                      - scale * F.cosine_similarity(self.model.embedder(att_h), x_h, dim=1).mean())

        def walk(centers, points, target):
            return self.f.walk_loss(centers, points, rw["steps"], rw["decay"], target, rw["visit_weight"],
                                    rw["temperature"])

        def fresh_prototypes():
            samples = self.model.generate_per_class(self.att[:k], n, self.gen, self.generator)
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
    def step(self, x, y):
        """One training batch: a D step, then the G step(s) of the configured schedule. Returns the
        loss values, detached tensors (synchronised only when the caller reads them): ``d``,
        ``g_seen``, ``g_creative`` and the weighted terms of the latter (``creativity`` and the four
        ``rw_*`` walks)."""
        m, k = self.model, self.num_seen
        z = torch.randn(y.shape[0], self.att.shape[1], generator=self.gen, device=self.device, dtype=self.att.dtype)
        with torch.no_grad():
            x_fake = sharded(lambda zi, yi: m.generator(zi, self.att[:k], yi), z, y)
        protos_d = self.embedder(self.att[:k])
        before = self.cfg["g_prototypes"] == "before_d_step"
        # The original formulation runs D itself on repeated rows, so it needs D's pre-update weights.
        embedder_g = copy.deepcopy(m.embedder) if before and self.f.runs_embedder else m.embedder
        loss_d = self.d_loss(x, y, x_fake, protos_d)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # G step(s): D is fixed, and D(A_seen) is a constant for G (it depends on no G output).
        m.embedder.requires_grad_(False)
        embedder_g.requires_grad_(False)
        try:
            if before:
                protos = protos_d.detach()
            else:
                with torch.no_grad():
                    protos = m.embedder(self.att[:k])
            self.opt_g.zero_grad(set_to_none=True)
            if self.dictionary is not None:
                self.opt_dict.zero_grad(set_to_none=True)
            x_gen = sharded(lambda zi, yi: self.generator(zi, self.att[:k], yi), z, y)
            loss_seen = self.g_seen_loss(x_gen, y, protos, embedder_g)
            if self.cfg["schedule"] == "two_step":
                loss_seen.backward()
                self.opt_g.step()  # the seen gradients stay and are applied again below (§3.5)
                loss_cr, terms = self.g_creative_loss(x, y, protos, embedder_g)
                loss_cr.backward()
            else:
                loss_cr, terms = self.g_creative_loss(x, y, protos, embedder_g)
                (loss_seen + loss_cr).backward()
            self.opt_g.step()
            if self.dictionary is not None:
                self.opt_dict.step()
        finally:
            m.embedder.requires_grad_(True)
        return {"d": loss_d.detach(), "g_seen": loss_seen.detach(), "g_creative": loss_cr.detach(), **terms}

    # --------------------------------------------------------------------------- evaluation
    def predictor(self):
        """``predict(features) -> class ids``: the nearest prototype D(a_c) by cosine over all C
        classes (§5), the prototypes computed once."""
        with torch.no_grad():
            protos = self.model.embedder(self.att)
        return lambda x: ops.nearest_prototype(x, protos, "cosine")


def continual_setting(data, cfg):
    """(classes per task, number of tasks): the config's, else the original's for the dataset name,
    else five tasks."""
    s, t = cfg["classes_per_task"], cfg["num_tasks"]
    if s is None or t is None:
        ds, dt = CONTINUAL_SETTINGS.get(data.name, (max(1, data.num_classes // 5), 5))
        s, t = s or ds, t or dt
    return int(s), int(t)


class GRW(Method):
    name = "grw"
    setting = "continual gzsl"
    settings = SETTINGS
    selection_modes = ("fixed",)  # a fixed number of epochs per task, as the original

    def run(self, data, config, ctx):
        t0 = time.perf_counter()
        s, t = continual_setting(data, config)
        split = ContinualSplit(data.labels, data.num_classes, s, t, **config["split"])
        data = data.to(ctx.device)
        trainer = GRWTrainer(data, config, ctx)

        def start_task(task):
            new = task.train.to(ctx.device)
            trainer.start_task(task.seen_classes.numel(), task.new_classes, data.features[new], data.labels[new])

        summary, per_task = run_continual(
            data, split, ReplayBuffer(config["buffer_size"]), ctx, epochs=config["epochs"],
            batch_size=config["batch_size"], start_task=start_task, step=trainer.step, predictor=trainer.predictor,
            min_batch=2, modules=trainer.modules)  # the original skips batches of one sample
        selector = Selector(data, ctx)
        selector.record("epochs_per_task", config["epochs"])
        state = {"model": cpu_state(trainer.model), "class_means": trainer.mu.cpu()}
        if trainer.dictionary is not None:
            state["dictionary"] = trainer.dictionary.weight.detach().cpu()
        last = split.task(split.trained_tasks[-1]) if split.trained_tasks else None
        exported = {"embedder": cpu_state(trainer.model.embedder), "embeddings": trainer.att,
                    "feature_dim": data.feature_dim,
                    "unseen_after_training": last.unseen_classes if last is not None else torch.arange(data.num_classes)}
        return MethodResult(metrics=summary, state=state, per_task=per_task, selection=selector.to_dict(), model=exported,
                            timings={"train_s": time.perf_counter() - t0})

    def scorer(self, record, device="cpu"):
        """The model after the last trained task: cosine similarity to the prototypes D(a_c) of every
        class; GZSL predicts the nearest prototype (as the run's per-task evaluation), ZSL the nearest
        among the classes still unseen after the last trained task."""
        m = record["model"]
        emb = m["embeddings"].to(device)
        embedder = MLP([emb.shape[1], record["config"]["hidden"], m["feature_dim"]], init="xavier")
        embedder.load_state_dict(m["embedder"])
        with torch.no_grad():
            protos = embedder.to(device).eval()(emb)
        unseen = m["unseen_after_training"].to(device)

        def gzsl(x):
            return -ops.pairwise_distance(x.to(device), protos, "cosine")

        return Scorer(torch.no_grad()(gzsl), torch.no_grad()(lambda x: masked(gzsl(x), unseen)),
                      predict_gzsl=lambda x: ops.nearest_prototype(x.to(device), protos, "cosine"))
