"""CVC-ZSL: "Rethinking Zero-Shot Learning: A Conditional Visual Classification Perspective"
(Li, Min, Fu, ICCV 2019; reference note cvc_zsl.md, section numbers below refer to it).

A generator maps class attributes to classifier weights, w(a) = ReLU(W2·ReLU(W1·a + b1) + b2), and a
sample is scored against class c by s·(cos(x, w_c) + β) with a learnable scale s and bias β (§2).
Inductive training draws episodes of ``ways`` seen classes × ``shots`` images and minimises the
cross-entropy over the episode's classes (§3.1). Transductive training (``transductive: true``)
starts from an inductive model, turns the generated classifiers into free per-class rows, and
alternates pseudo-labelling of the unlabelled unseen test features (ratio test + top-k per class)
with episodes that mix labelled seen images (cross-entropy) and pseudo-labelled unseen images
(generalized cross-entropy with ``loss_q``) (§3.2). Evaluation: ZSL among the generated unseen
classifiers, GZSL among all classes with generated seen classifiers (inductive) or the learned seen
rows (transductive), no calibration (§4).

Conscious choices (§7):
- Model selection on a class-disjoint validation split by default: the number of epochs (inductive,
  then transductive) is chosen by validation GZSL H, and the model is retrained on all seen data
  for that many epochs. The original picks the best-H epoch on the test sets, evaluated after every
  epoch; ``--select-on-test`` reproduces that, at the original's cadence (every epoch, whatever
  ``eval_every`` says). In the transductive validation run the unlabelled data are
  the validation split's held-out classes, never test images.
- Attributes as the original reads them: L2-normalised ``att``, raw ``original_att`` for AWA2 (§7.2).
- β is kept although it cancels in the softmax (it shifts the pseudo-label ratio test, §7.3).
- Inductive GZSL uses generated seen classifiers, as the code does (§7.4).
- StepLR: the learning rate of epoch e (0-based) is lr·γ^⌊e/lr_step⌋ (γ = ``lr_gamma``). The original calls
  ``scheduler.step()`` at the start of every epoch, which on its PyTorch 0.4.1 gives exactly this
  schedule (0.4's scheduler constructor leaves ``last_epoch`` at −1, so the first call sets epoch
  0); there is no one-epoch shift (§7.8). Weight decay applies to s and β too (§7.9).
- The pseudo-label set keeps duplicates and conflicting labels, as the original (§7.7).
- A transductive run with ``inductive_checkpoint`` set starts from that checkpoint (a ``--method cvc``
  checkpoint.pt) and trains the configured number of epochs: a validation run would need an
  inductive model that never saw the validation classes.

Efficiency the original lacks (§6): episodes are drawn on the training device from a padded
per-class index table with random keys and top-k, with no Python loop over samples, and
``episodes_per_step`` episodes can be batched into one step; the pseudo-label ratio test and
per-class top-k are vectorised; scoring is one cosine GEMM (``ops.pairwise_distance``).
"""
import time

import torch
import torch.nn.functional as F
from torch import nn

from zslfast.engine.checkpoint import cpu_state as _state_dict
from zslfast.engine.checkpoint import load_checkpoint
from zslfast.engine.loop import train_epochs
from zslfast.engine.resume import State
from zslfast.engine.method import Method, MethodResult
from zslfast.engine.samplers import EpisodeBatches, EpisodeSampler
from zslfast.engine.selection import Selector
from zslfast.errors import ZSLError
from zslfast.eval.metrics import zsl_gzsl_metrics
from zslfast.nn import MLP, CosineScorer
from zslfast.optim import adam
from zslfast.settings import Bool, File, Float, Int, Section, schedule_settings, shared


SETTINGS = Section(
    **shared("attributes", "optim", "schedule", "epochs", "evaluation", "validation"),
    transductive=Bool(),
    inductive_checkpoint=File(nullable=True),
    hidden=Int(min=1),
    init_std=Float(min=0, min_open=True),
    scale_init=Float(min=0, min_open=True),
    ways=Int(min=2),
    shots=Int(min=1),
    episodes_per_epoch=Int(min=1),
    episodes_per_step=Int(min=1),
    grad_clip=Float(min=0, min_open=True),
    transductive_training=Section(
        ways=Int(min=2), shots=Int(min=1), refresh_every=Int(min=1), loss_q=Float(min=0, max=1, min_open=True),
        ratio=Float(min=1), top_per_class=Int(min=1), test_shots_factor=Float(min=0, min_open=True),
        **schedule_settings()),
    checks=[lambda c: None if c["episodes_per_step"] <= c["episodes_per_epoch"] else
            f"episodes_per_step = {c['episodes_per_step']} is more than episodes_per_epoch = "
            f"{c['episodes_per_epoch']}"],
)


# ------------------------------------------------------------------------------------------- model
class CVCModel(nn.Module):
    """The classifier generator w(a) with the cosine-scoring scale s and bias β (§2)."""

    def __init__(self, attribute_dim, feature_dim, hidden=1600, init_std=0.02, scale=10.0):
        super().__init__()
        # The scorer is registered first so that parameters() lists s and β before the generator, as
        # zslfast 0.1 did: the order of the gradient-clipping norm's sum, and so its rounding.
        self.scorer = CosineScorer(scale)
        self.generator = MLP([attribute_dim, hidden, feature_dim], init="normal", std=init_std)

    def forward(self, att):
        """Classifier weights [C, D] for attributes [C, d_a]."""
        return self.generator(att)

    def logits(self, x, weights):
        """s·(cos(x_i, w_c) + β), [N, C]."""
        return self.scorer(x, weights)


def generalized_cross_entropy(logits, target, q):
    """GCE_q = mean_i (1 − (p_{i,y_i} + 1e−8)^q)/q with p the softmax of ``logits`` (Zhang & Sabuncu
    2018). q → 0 gives the cross-entropy, q = 1 the mean absolute error."""
    if not q > 0:
        raise ValueError(f"loss_q must be > 0, got {q}")
    p = torch.softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    return ((1 - (p + 1e-8) ** q) / q).mean()


def pseudo_labels(scores, ratio=1.2, top_per_class=5):
    """Reliable pseudo-labels from scores [N, U] of unlabelled samples against U classes (§3.2).

    (a) samples whose top-1 over top-2 score ratio (absolute values) exceeds ``ratio``, labelled with
    their argmax; (b) for every class, the ``top_per_class`` highest-scoring samples. Returns the
    concatenation (sample positions, class positions); like the original, a sample may appear twice,
    even with two labels.
    """
    top = scores.topk(min(2, scores.shape[1]), dim=1)
    if scores.shape[1] > 1:
        confident = top.values[:, 0].abs() > ratio * top.values[:, 1].abs()
    else:
        confident = torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)
    a_idx = torch.nonzero(confident).squeeze(1)
    a_cls = top.indices[a_idx, 0]
    k = min(top_per_class, scores.shape[0])
    b_idx = scores.topk(k, dim=0).indices  # [k, U]
    b_cls = torch.arange(scores.shape[1], device=scores.device).expand(k, -1)
    return torch.cat([a_idx, b_idx.reshape(-1)]), torch.cat([a_cls, b_cls.reshape(-1)])


# ------------------------------------------------------------------------------------------ training
def episode_logits(model, x, weights, episodes):
    """Logits of each episode's samples against its own classes: x [E·n, D], weights [E·w, D] ->
    [E·n, w], the diagonal blocks of one cosine GEMM."""
    full = model.logits(x, weights)
    e = episodes
    n, w = x.shape[0] // e, weights.shape[0] // e
    ar = torch.arange(e, device=x.device)
    return full.view(e, n, e, w)[ar, :, ar, :].reshape(e * n, w)


def _schedule(model_params, cfg, device):
    opt = adam(model_params, device, cfg["lr"], cfg["weight_decay"])
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=cfg["lr_step"], gamma=cfg["lr_gamma"])


def _on_eval(evaluate, obj):
    return None if evaluate is None else (lambda epoch: evaluate(obj, epoch))


def train_inductive(data, cfg, ctx, epochs, evaluate=None, eval_every=1, eval_start=1, desc="cvc"):
    """Episode training of a new :class:`CVCModel` on ``data``'s trainval split (§3.1);
    ``evaluate(model, epoch) -> float`` every ``eval_every`` epochs from ``eval_start`` and after the last."""
    device = ctx.device
    with ctx.init_scope():
        model = CVCModel(data.attribute_dim, data.feature_dim, cfg["hidden"], cfg["init_std"], cfg["scale_init"])
    model.to(device)
    x_all, y_all = data.subset("trainval")
    ways, shots, e = cfg["ways"], cfg["shots"], cfg["episodes_per_step"]
    batches = EpisodeBatches(EpisodeSampler(y_all, ctx.rng("episodes", device)), ways, shots, e,
                             max(1, cfg["episodes_per_epoch"] // e))
    opt, sched = _schedule(model.parameters(), cfg, device)
    target = torch.arange(ways, device=device).repeat_interleave(shots).repeat(e)

    def step(batch):
        pos, cls = batch
        logits = episode_logits(model, x_all[pos.reshape(-1)], model(data.attributes[cls.reshape(-1)]), e)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        return loss.detach()

    train_epochs(desc, epochs, batches, step, ctx, scheduler=sched, evaluate=_on_eval(evaluate, model),
                 eval_every=eval_every, eval_start=eval_start, modules={"model": model, "optimizer": opt})
    return model


class TransductiveState(nn.Module):
    """The generator plus free classifier rows for every class, initialised from the generator (§3.2)."""

    def __init__(self, model, attributes):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.rows = nn.Parameter(model(attributes).detach().clone())

    def classifiers(self, attributes, generated):
        """All C rows: free rows, except the ``generated`` class ids, which come from the generator."""
        return self.rows.index_copy(0, generated, self.model(attributes[generated]))


def train_transductive(data, cfg, ctx, model, epochs, evaluate=None, eval_every=1, desc="cvc transductive"):
    """Transductive training from an inductive ``model`` (changed in place); the unlabelled data are
    ``data``'s test_unseen features, whose labels are never read. Returns the :class:`TransductiveState`."""
    t = cfg["transductive_training"]
    device = ctx.device
    state = TransductiveState(model, data.attributes)
    x_seen, y_seen = data.subset("trainval")
    x_unl, _ = data.subset("test_unseen")
    unseen = data.unseen_classes.to(device)
    gen = ctx.rng("transductive", device)  # seen episodes and pseudo-labelled episodes share it
    ways, shots, e = t["ways"], t["shots"], cfg["episodes_per_step"]
    batches = EpisodeBatches(EpisodeSampler(y_seen, gen), ways, shots, e, max(1, cfg["episodes_per_epoch"] // e))
    opt, sched = _schedule(state.parameters(), t, device)
    test_shots = max(1, int(round(shots * t["test_shots_factor"])))
    pseudo = State()  # the pseudo-labelled unlabelled features: refreshed every refresh_every epochs, checkpointed
    samplers = {}

    def pseudo_sampler():  # an episode sampler over the current pseudo-labels (stateless apart from gen)
        if samplers.get("y") is not pseudo["y"]:
            samplers["y"], samplers["sampler"] = pseudo["y"], EpisodeSampler(pseudo["y"], gen)
        return samplers["sampler"]

    def refresh(epoch):
        if (epoch - 1) % t["refresh_every"]:
            return
        with torch.no_grad():
            scores = model.logits(x_unl, model(data.attributes[unseen]))
        pos, cls = pseudo_labels(scores, t["ratio"], t["top_per_class"])
        pseudo["x"], pseudo["y"] = x_unl[pos], unseen[cls]

    def step(batch):
        pos_b, cls_b = batch
        ps = pseudo_sampler()
        pos_u, cls_u = ps.sample(ps.classes.numel(), test_shots, e)
        weights = state.classifiers(data.attributes, ps.classes)
        logits_b = model.logits(x_seen[pos_b.reshape(-1)], weights)
        logits_u = model.logits(pseudo["x"][pos_u.reshape(-1)], weights)
        y_b = cls_b.unsqueeze(2).expand(-1, -1, shots).reshape(-1)
        y_u = cls_u.unsqueeze(2).expand(-1, -1, test_shots).reshape(-1)
        n_b, n_u = y_b.numel(), y_u.numel()
        loss = (n_b * F.cross_entropy(logits_b, y_b)
                + n_u * generalized_cross_entropy(logits_u, y_u, t["loss_q"])) / (n_b + n_u)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    train_epochs(desc, epochs, batches, step, ctx, scheduler=sched, evaluate=_on_eval(evaluate, state),
                 eval_every=eval_every, on_epoch_start=refresh, modules={"model": state, "optimizer": opt,
                                                                         "pseudo_labels": pseudo})
    return state


# --------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def classifier_matrix(model_or_state, attributes, unseen):
    """Classifier rows for all classes: generated (inductive model) or learned seen rows with
    generated unseen rows (transductive state)."""
    if isinstance(model_or_state, TransductiveState):
        return model_or_state.classifiers(attributes, unseen), model_or_state.model
    return model_or_state(attributes), model_or_state


def evaluate(model_or_state, data):
    """ZSL T1 and GZSL S/U/H (percent) on ``data``'s test splits."""
    weights, model = classifier_matrix(model_or_state, data.attributes, data.unseen_classes.to(data.attributes.device))
    return zsl_gzsl_metrics(lambda x: model.logits(x, weights), data)


def load_inductive(path, data, cfg, device):
    """The generator of a ``--method cvc`` checkpoint."""
    ckpt = load_checkpoint(path, "inductive_checkpoint", method="cvc", part="inductive")
    model = CVCModel(data.attribute_dim, data.feature_dim, cfg["hidden"], cfg["init_std"], cfg["scale_init"])
    try:
        model.load_state_dict(ckpt["state"]["inductive"])
    except RuntimeError as exc:
        raise ZSLError(f"inductive_checkpoint {path}: does not fit this dataset/config ({str(exc).splitlines()[0]})") from None
    return model.to(device)


class CVC(Method):
    name = "cvc"
    setting = "zsl+gzsl (inductive or transductive)"
    settings = SETTINGS

    def run(self, data, config, ctx):
        t0 = time.perf_counter()
        data = data.to(ctx.device)
        t_cfg = config["transductive_training"]
        selector = Selector(data, ctx, "gzsl_h", config["validation"])
        test_cadence = (1, 1)  # the original evaluates on the test sets after every epoch
        timings, state = {}, {}

        def scored(model_or_state, view):
            return evaluate(model_or_state, view), None

        # Inductive: the epoch count chosen by the run's selection mode, or a given checkpoint.
        checkpoint = config["inductive_checkpoint"] if config["transductive"] else None
        if checkpoint:
            model, val_model = load_inductive(checkpoint, data, config, ctx.device), None
            selector.record("inductive_checkpoint", checkpoint)
            inductive_metrics = evaluate(model, data)
        else:
            fitted = selector.epochs(
                "inductive_epochs",
                lambda view, epochs, on_eval, every, start, phase: train_inductive(
                    view, config, ctx, epochs, on_eval, every, start,
                    desc="cvc (validation)" if phase == "select" else "cvc"),
                scored, config["epochs"], config["eval_every"], config["eval_start"], test_cadence=test_cadence,
                keep_val_model=config["transductive"])
            model, val_model = fitted.model, fitted.val_model
            inductive_metrics = fitted.metrics or evaluate(model, data)
        timings["inductive_s"] = time.perf_counter() - t0
        state["inductive"] = _state_dict(model)
        if not config["transductive"]:
            return MethodResult(metrics=inductive_metrics, state=state, selection=selector.to_dict(), timings=timings)

        # Transductive: the validation run starts from the validation run's inductive model (one that
        # never saw the validation classes), the final run from the final inductive model. From a
        # given checkpoint there is no such model: the configured epochs are trained.
        t1 = time.perf_counter()

        def fit_t(view, epochs, on_eval, every, _start, phase):
            start = val_model if phase == "select" else model
            return train_transductive(view, config, ctx, start, epochs, on_eval, every,
                                      desc="cvc transductive (validation)" if phase == "select" else "cvc transductive")

        if checkpoint and ctx.selection == "validation":
            st = fit_t(data, t_cfg["epochs"], None, 1, 1, "final")
            selector.record("transductive_epochs", t_cfg["epochs"])
            metrics = evaluate(st, data)
        else:
            fitted = selector.epochs("transductive_epochs", fit_t, scored, t_cfg["epochs"], t_cfg["eval_every"],
                                     test_cadence=test_cadence)
            st = fitted.model
            metrics = fitted.metrics or evaluate(st, data)
        timings["transductive_s"] = time.perf_counter() - t1
        state["transductive"] = _state_dict(st)
        metrics = {**metrics, **{f"inductive_{k}": v for k, v in inductive_metrics.items()}}
        return MethodResult(metrics=metrics, state=state, selection=selector.to_dict(), timings=timings)
