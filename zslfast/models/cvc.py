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
- StepLR: the learning rate of epoch e (0-based) is lr·γ^⌊e/step_size⌋. The original calls
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
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from zslfast import ops
from zslfast.errors import ZSLError
from zslfast.eval.metrics import zsl_gzsl_metrics
from zslfast.methods import MethodResult, register
from zslfast.optim import adam
from zslfast.settings import ATTRIBUTES, VALIDATION, Bool, File, Float, Int, Section


def _schedule_settings(**extra):
    return dict(lr=Float(min=0, min_open=True), weight_decay=Float(min=0), step_size=Int(min=1),
                gamma=Float(min=0, max=1, min_open=True), epochs=Int(min=1), eval_every=Int(min=1), **extra)


SETTINGS = Section(
    attributes=ATTRIBUTES(),
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
        **_schedule_settings()),
    validation=VALIDATION(),
    checks=[lambda c: None if c["episodes_per_step"] <= c["episodes_per_epoch"] else
            f"episodes_per_step = {c['episodes_per_step']} is more than episodes_per_epoch = "
            f"{c['episodes_per_epoch']}"],
    **_schedule_settings(),
)


# ------------------------------------------------------------------------------------------- model
class CVCModel(nn.Module):
    """The classifier generator with the cosine-scoring scale s and bias β (§2)."""

    def __init__(self, attribute_dim, feature_dim, hidden=1600, init_std=0.02, scale=10.0):
        super().__init__()
        self.generator = nn.Sequential(nn.Linear(attribute_dim, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim),
                                       nn.ReLU())
        for m in self.generator:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=init_std)
                nn.init.zeros_(m.bias)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, att):
        """Classifier weights [C, D] for attributes [C, d_a]."""
        return self.generator(att)

    def logits(self, x, weights):
        """s·(cos(x_i, w_c) + β), [N, C]."""
        return self.scale * ((1 - ops.pairwise_distance(x, weights, "cosine")) + self.bias)


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


class EpisodeSampler:
    """Episodes of distinct classes × distinct samples, drawn on the device of ``labels``.

    Args:
        labels: class id of every candidate sample (any ids).
        generator: a torch.Generator on the same device.

    Samples are kept in a padded [classes, max count] table; a draw gives random keys to the classes
    (and to each class's samples, padding excluded) and keeps the top-k, so classes and samples are
    distinct within an episode and no Python loop runs over samples.
    """

    def __init__(self, labels, generator):
        self.generator = generator
        self.classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(labels.numel(), device=labels.device) - starts[inverse[order]]
        self.table = torch.full((self.classes.numel(), int(counts.max())), -1, dtype=torch.long, device=labels.device)
        self.table[inverse[order], rank] = order
        self.counts = counts

    def sample(self, ways, shots, episodes=1):
        """Positions [E, ways, shots] into ``labels`` and their class ids [E, ways]."""
        n_cls = self.classes.numel()
        if ways > n_cls:
            raise ZSLError(f"episodes of {ways} ways need {ways} classes, only {n_cls} are available")
        if shots > int(self.counts.min()):
            raise ZSLError(f"episodes of {shots} shots need {shots} samples per class; the smallest class has "
                           f"{int(self.counts.min())}")
        dev = self.table.device
        pick = torch.rand(episodes, n_cls, generator=self.generator, device=dev).topk(ways, dim=1).indices
        keys = torch.rand(episodes, ways, self.table.shape[1], generator=self.generator, device=dev)
        keys.masked_fill_(self.table[pick] < 0, -1.0)  # padding never wins
        slots = keys.topk(shots, dim=2).indices
        return self.table[pick].gather(2, slots), self.classes[pick]


# ------------------------------------------------------------------------------------------ training
def _episode_logits(model, x, weights, episodes):
    """Logits of each episode's samples against its own classes: x [E·n, D], weights [E·w, D] ->
    [E·n, w], the diagonal blocks of one cosine GEMM."""
    full = model.logits(x, weights)
    e = episodes
    n, w = x.shape[0] // e, weights.shape[0] // e
    ar = torch.arange(e, device=x.device)
    return full.view(e, n, e, w)[ar, :, ar, :].reshape(e * n, w)


def _schedule(model_params, cfg, device):
    opt = adam(model_params, device, cfg["lr"], cfg["weight_decay"])
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=cfg["step_size"], gamma=cfg["gamma"])


def _epochs_loop(cfg, epochs, desc, ctx, step, evaluate=None, on_epoch=None):
    """Run ``epochs`` epochs of ``episodes_per_epoch`` episodes (``episodes_per_step`` per call of
    ``step``); ``evaluate(epoch)`` every ``eval_every`` epochs and at the end; returns its history."""
    steps = max(1, cfg["episodes_per_epoch"] // cfg["episodes_per_step"])
    history = []
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not ctx.progress, leave=False)
    for epoch in bar:
        if on_epoch is not None:
            on_epoch(epoch)
        for _ in range(steps):
            loss = step()
        bar.set_postfix(loss=f"{float(loss):.4f}")
        if evaluate is not None and (epoch % cfg["eval_every"] == 0 or epoch == epochs):
            history.append((epoch, float(evaluate(epoch))))
    return history


def train_inductive(data, cfg, ctx, epochs, evaluate=None, desc="cvc"):
    """Episode training of a new :class:`CVCModel` on ``data``'s trainval split (§3.1)."""
    device = ctx.device
    torch.manual_seed(ctx.seed)
    model = CVCModel(data.attribute_dim, data.feature_dim, cfg["hidden"], cfg["init_std"], cfg["scale_init"]).to(device)
    x_all, y_all = data.subset("trainval")
    sampler = EpisodeSampler(y_all, torch.Generator(device=device).manual_seed(ctx.seed))
    opt, sched = _schedule(model.parameters(), cfg, device)
    ways, shots, e = cfg["ways"], cfg["shots"], cfg["episodes_per_step"]
    target = torch.arange(ways, device=device).repeat_interleave(shots).repeat(e)

    def step():
        pos, cls = sampler.sample(ways, shots, e)
        logits = _episode_logits(model, x_all[pos.reshape(-1)], model(data.attributes[cls.reshape(-1)]), e)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        return loss.detach()

    def on_epoch(ep):
        if ep > 1:  # StepLR after every epoch
            sched.step()

    history = _epochs_loop(cfg, epochs, desc, ctx, step, evaluate=evaluate and (lambda ep: evaluate(model, ep)),
                           on_epoch=on_epoch)
    return model, history


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


def train_transductive(data, cfg, ctx, model, epochs, evaluate=None, desc="cvc transductive"):
    """Transductive training from an inductive ``model`` (changed in place); the unlabelled data are
    ``data``'s test_unseen features, whose labels are never read."""
    t = cfg["transductive_training"]
    device = ctx.device
    torch.manual_seed(ctx.seed + 1)
    state = TransductiveState(model, data.attributes)
    x_seen, y_seen = data.subset("trainval")
    x_unl, _ = data.subset("test_unseen")
    unseen = data.unseen_classes.to(device)
    gen = torch.Generator(device=device).manual_seed(ctx.seed + 1)
    seen_sampler = EpisodeSampler(y_seen, gen)
    opt, sched = _schedule(state.parameters(), t, device)
    ways, shots, e = t["ways"], t["shots"], cfg["episodes_per_step"]
    test_shots = max(1, int(round(shots * t["test_shots_factor"])))
    pseudo = {}

    def refresh():
        with torch.no_grad():
            scores = model.logits(x_unl, model(data.attributes[unseen]))
        pos, cls = pseudo_labels(scores, t["ratio"], t["top_per_class"])
        pseudo["x"], pseudo["y"] = x_unl[pos], unseen[cls]
        pseudo["sampler"] = EpisodeSampler(pseudo["y"], gen)

    def step():
        pos_b, cls_b = seen_sampler.sample(ways, shots, e)
        ps = pseudo["sampler"]
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

    def on_epoch(ep):
        if ep > 1:
            sched.step()
        if (ep - 1) % t["refresh_every"] == 0:
            refresh()

    history = _epochs_loop({**cfg, "eval_every": t["eval_every"]}, epochs, desc, ctx, step,
                           evaluate=evaluate and (lambda ep: evaluate(state, ep)), on_epoch=on_epoch)
    return state, history


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


def _state_dict(obj):
    return {k: v.detach().cpu().clone() for k, v in obj.state_dict().items()}


def load_inductive(path, data, cfg, device):
    """The generator of a ``--method cvc`` checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a missing, truncated or foreign file: one clear error, whatever torch raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZSLError(f"inductive_checkpoint {path}: cannot read it ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("method") != "cvc" or "inductive" not in ckpt.get("state", {}):
        raise ZSLError(f"inductive_checkpoint {path}: not a checkpoint of --method cvc")
    model = CVCModel(data.attribute_dim, data.feature_dim, cfg["hidden"], cfg["init_std"], cfg["scale_init"])
    try:
        model.load_state_dict(ckpt["state"]["inductive"])
    except RuntimeError as exc:
        raise ZSLError(f"inductive_checkpoint {path}: does not fit this dataset/config ({str(exc).splitlines()[0]})") from None
    return model.to(device)


@register
class CVCMethod:
    name = "cvc"
    setting = "zsl+gzsl (inductive or transductive)"
    selection = "validation"
    settings = SETTINGS

    def run(self, data, config, ctx):
        t0 = time.perf_counter()
        data = data.to(ctx.device)
        trans = bool(config["transductive"])
        t_cfg = config["transductive_training"]
        timings, selection, state = {}, {}, {}
        if ctx.select_on_test:
            return self._run_on_test(data, config, ctx, trans)

        # Inductive: epochs chosen on the validation split, then retrained on all seen classes.
        checkpoint = config["inductive_checkpoint"]
        if checkpoint and trans:
            model = load_inductive(checkpoint, data, config, ctx.device)
            selection["inductive"] = {"from": checkpoint}
            val = val_model = None
        else:
            val = data.validation_split(**config["validation"])
            best = {}

            def on_val(model, epoch):
                h = evaluate(model, val)["gzsl_h"]
                if not best or h > best["h"]:
                    best.update(h=h, epoch=epoch, state=copy.deepcopy(model.state_dict()))
                return h

            val_model, history = train_inductive(val, config, ctx, config["epochs"], evaluate=on_val,
                                                 desc="cvc (validation)")
            val_model.load_state_dict(best["state"])
            selection["inductive"] = {"on": "validation", "metric": "gzsl_h", "epoch": best["epoch"],
                                      "history": history}
            t1 = time.perf_counter()
            model, _ = train_inductive(data, config, ctx, best["epoch"])
            timings.update(select_s=t1 - t0, train_s=time.perf_counter() - t1)
        inductive_metrics = evaluate(model, data)
        state["inductive"] = _state_dict(model)
        if not trans:
            return MethodResult(metrics=inductive_metrics, state=state, selection=selection, timings=timings)

        t2 = time.perf_counter()
        if val_model is not None:
            best_t = {}

            def on_val_t(st, epoch):
                h = evaluate(st, val)["gzsl_h"]
                if not best_t or h > best_t["h"]:
                    best_t.update(h=h, epoch=epoch)
                return h

            _, history = train_transductive(val, config, ctx, val_model, t_cfg["epochs"], evaluate=on_val_t,
                                            desc="cvc transductive (validation)")
            epochs = best_t["epoch"]
            selection["transductive"] = {"on": "validation", "metric": "gzsl_h", "epoch": epochs, "history": history}
        else:
            epochs = t_cfg["epochs"]
            selection["transductive"] = {"on": "none (fixed epochs from a given checkpoint)", "epoch": epochs}
        t3 = time.perf_counter()
        st, _ = train_transductive(data, config, ctx, model, epochs)
        timings.update(trans_select_s=t3 - t2, trans_train_s=time.perf_counter() - t3)
        state["transductive"] = _state_dict(st)
        metrics = evaluate(st, data)
        metrics.update({f"inductive_{k}": v for k, v in inductive_metrics.items()})
        return MethodResult(metrics=metrics, state=state, selection=selection, timings=timings)

    def _run_on_test(self, data, config, ctx, trans):
        """The original protocol: evaluate on the test sets after every epoch, keep the best-H epoch."""
        config = {**config, "eval_every": 1,
                  "transductive_training": {**config["transductive_training"], "eval_every": 1}}
        best = {}

        def keep(obj, epoch, tag):
            m = evaluate(obj, data)
            if tag not in best or m["gzsl_h"] > best[tag]["metrics"]["gzsl_h"]:
                best[tag] = {"metrics": m, "epoch": epoch, "state": _state_dict(obj)}
            return m["gzsl_h"]

        if config["inductive_checkpoint"] and trans:
            model = load_inductive(config["inductive_checkpoint"], data, config, ctx.device)
            best["inductive"] = {"metrics": evaluate(model, data), "epoch": None, "state": _state_dict(model)}
        else:
            model, history = train_inductive(data, config, ctx, config["epochs"],
                                             evaluate=lambda m, ep: keep(m, ep, "inductive"))
            model.load_state_dict(best["inductive"]["state"])
            best["inductive"]["history"] = history
        selection = {"on": "test (original protocol)", "metric": "gzsl_h", "inductive_epoch": best["inductive"]["epoch"],
                     "inductive_history": best["inductive"].get("history")}
        state = {"inductive": best["inductive"]["state"]}
        if not trans:
            return MethodResult(metrics=best["inductive"]["metrics"], state=state, selection=selection)
        _, history = train_transductive(data, config, ctx, model, config["transductive_training"]["epochs"],
                                        evaluate=lambda st, ep: keep(st, ep, "transductive"))
        metrics = dict(best["transductive"]["metrics"])
        metrics.update({f"inductive_{k}": v for k, v in best["inductive"]["metrics"].items()})
        selection.update(transductive_epoch=best["transductive"]["epoch"], transductive_history=history)
        state["transductive"] = best["transductive"]["state"]
        return MethodResult(metrics=metrics, state=state, selection=selection)
