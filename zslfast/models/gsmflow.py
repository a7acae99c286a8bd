"""GSMFlow: "Mitigating Generation Shifts for Generalized Zero-Shot Learning" (Chen et al., ACM MM 2021).

A conditional affine-coupling flow (:class:`zslfast.nn.ConditionalFlow`) models visual features given
a "global semantic" condition from the relative-positioning module; unseen-class features are then
sampled from it and a softmax classifier is trained on real seen + synthetic unseen features
(reference note gsmflow.md; section numbers below refer to it).

Faithful to the MM'21 code: K GLOW blocks without permutations, clamp 1.0 with atan, all flow
parameters drawn from N(0, 0.01²), 2048-wide LeakyReLU(0.2) subnets, the condition fed to every
subnet (§2b); three-anchor relative positioning with anchors chosen by cosine-similarity row sums
(min, max, upper median) (§2d); visual perturbation x + π·ε on the flow's input at training time
(§2e); loss mean(z²)/2 − mean(logdet)/D plus λ·MSE(f⁻¹(0; sr(a_s)), μ_s) with sr under no_grad
(§2f); Adam with weight decay and StepLR per epoch; full batches (§3).

Conscious choices (§7): model selection on a class-disjoint validation split by default: the number
of flow epochs and each final classifier's number of epochs (GZSL and ZSL, each the best epoch on
the validation split's held-out data, as the original picks its best classifier epoch) are chosen
there, then everything is retrained on all of trainval with those counts (the original selects the
evaluation iteration and the classifier epoch on the test set: ``--select-on-test`` reproduces
that). The synthetic budget is ``synth_per_class`` features per unseen class (the MM'21 counts on
real data) or, when ``synth_ratio`` is set, that ratio × the mean number of real trainval features
per seen class, so a budget follows the data it runs on (the CPU budgets of the synthetic and
``--like`` runs use a ratio; results.json records count and ratio under ``info.synthetic``). A
median tie in anchor selection takes the first class
instead of crashing; the two backward calls are one summed loss; the lr schedule steps after each
epoch (the original also steps at iteration 0); ZSL T1 comes from a classifier trained on synthetic
unseen features only, as in the TMM code (MM has no T1).

Efficiency the original lacks: each subnet's condition projection is computed once per class in
the batch (not per sample) and once per class when sampling; synthetic features never leave the
device; sampling runs in whole batches per class; the coupling is one fused operator; Adam is fused.
"""
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from zslfast.eval.classifier import train_softmax_classifier
from zslfast.eval.metrics import harmonic_mean, per_class_accuracy, predict
from zslfast.methods import MethodResult, register
from zslfast.nn import ConditionalFlow
from zslfast.ops.coupling import CLAMP_MODES
from zslfast.optim import adam
from zslfast.settings import ATTRIBUTES, FEATURE_NORM, VALIDATION, Choice, Float, Int, Section

SETTINGS = Section(
    feature_norm=FEATURE_NORM(),
    attributes=ATTRIBUTES(),
    data_format=Choice("xlsa17", "epgn"),
    flow=Section(blocks=Int(min=1), hidden=Int(min=1), cond_dim=Int(min=1), clamp=Float(min=0, min_open=True),
                 clamp_mode=Choice(*CLAMP_MODES), init_std=Float(min=0, min_open=True)),
    anchors=Choice("seen", "all"),
    lr=Float(min=0, min_open=True),
    weight_decay=Float(min=0),
    lr_step_epochs=Int(min=1),
    lr_gamma=Float(min=0, max=1, min_open=True),
    batch_size=Int(min=1),
    epochs=Int(min=1),
    perturbation=Float(min=0),
    perturbation_dropout=Float(min=0, max=1, max_open=True),
    proto_weight=Float(min=0),
    synth_per_class=Int(min=1, nullable=True),
    synth_ratio=Float(min=0, min_open=True, nullable=True),
    classifier=Section(lr=Float(min=0, min_open=True), epochs=Int(min=1), batch_size=Int(min=1)),
    eval_start_epoch=Int(min=1),
    eval_every_epochs=Int(min=1),
    calibration=Float(),
    validation=VALIDATION(),
    checks=[
        lambda c: None if c["synth_per_class"] is not None or c["synth_ratio"] is not None else
        "synth_per_class and synth_ratio are both null; set one (the number of synthetic features per unseen "
        "class, or that number as a multiple of the mean real count per seen class)",
        lambda c: None if c["eval_start_epoch"] <= c["epochs"] else
        f"eval_start_epoch = {c['eval_start_epoch']} is after the last epoch ({c['epochs']}): nothing would be "
        "evaluated or selected",
    ],
)


def select_anchors(att):
    """Indices of the three anchor classes: least similar to the others (min cosine row sum), most
    central (max), and the upper median (§2d). Ties take the first class."""
    a = torch.nn.functional.normalize(att.double(), dim=1)
    rho = (a @ a.T).sum(1)
    median_value = rho.sort().values[rho.numel() // 2]
    med = int(torch.nonzero(rho == median_value)[0])
    return [int(rho.argmin()), int(rho.argmax()), med]


class RelativePositioning(nn.Module):
    """sr(a) = Σ_i ReLU(W_i (a − v_i) + b_i) over three frozen anchors v_i (§2d), computed as one GEMM
    with the anchor offsets folded into the biases."""

    def __init__(self, anchors, out_dim):
        super().__init__()
        self.register_buffer("anchors", anchors.clone())
        d = anchors.shape[1]
        self.branches = nn.ModuleList([nn.Linear(d, out_dim) for _ in range(3)])  # default init, as the original

    def forward(self, a):
        w = torch.cat([br.weight for br in self.branches])  # [3·out, d]
        b = torch.cat([br.bias - br.weight @ v for br, v in zip(self.branches, self.anchors)])
        h = torch.relu(torch.addmm(b, a, w.T))
        return h.view(a.shape[0], 3, -1).sum(1)


class GSMFlowModel(nn.Module):
    def __init__(self, feature_dim, anchors, cfg):
        super().__init__()
        f = cfg["flow"]
        self.sr = RelativePositioning(anchors, f["cond_dim"])
        self.flow = ConditionalFlow(feature_dim, f["cond_dim"], f["blocks"], f["hidden"], f["clamp"],
                                    f["clamp_mode"], init_std=f["init_std"])

    def nll(self, x, y, attributes):
        """The flow's training loss on features x of classes y: mean(z²)/2 − mean(log|det J|)/D with
        z = f(x; sr(a_y)), i.e. the negative log-likelihood per dimension up to the constant ½·log 2π
        (§2f). The condition is computed once per class present in y."""
        classes, inverse = torch.unique(y, return_inverse=True)
        z, logdet = self.flow(x, self.sr(attributes[classes]), cond_index=inverse)
        return (z ** 2).mean() / 2 - logdet.mean() / x.shape[1]

    def prototypes(self, class_attributes):
        """The visual prototype of each class, f⁻¹(0; sr(a)): the inverse flow of the latent origin
        (§2f). sr is held fixed here (no_grad), as in the original, so this loss trains the flow only."""
        with torch.no_grad():
            cond = self.sr(class_attributes)
        zeros = class_attributes.new_zeros(class_attributes.shape[0], self.flow.dim)
        return self.flow(zeros, cond, rev=True)[0]

    @torch.no_grad()
    def synthesize(self, attributes, classes, n_per_class, generator, batch=4096):
        """n_per_class features per class id in ``classes`` (on the model's device) and their labels."""
        device = attributes.device
        feats, labels = [], []
        for c in classes.tolist():
            cond = self.sr(attributes[c:c + 1])  # one condition row, broadcast over the batch
            for start in range(0, n_per_class, batch):
                n = min(batch, n_per_class - start)
                z = torch.randn(n, self.flow.dim, generator=generator).to(device=device, dtype=attributes.dtype)
                feats.append(self.flow(z, cond, rev=True)[0])
                labels.append(torch.full((n,), c, dtype=torch.long, device=device))
        return torch.cat(feats), torch.cat(labels)


def build_model(data, cfg, device):
    """An untrained GSMFlowModel for ``data`` (anchors chosen from its seen classes, or from all
    classes with ``anchors: all``), initialised from the global RNG."""
    att = data.attributes
    anchor_pool = att[data.seen_classes.to(att.device)] if cfg["anchors"] == "seen" else att
    return GSMFlowModel(data.feature_dim, anchor_pool[select_anchors(anchor_pool)], cfg).to(device)


def train_flow(data, cfg, ctx, evaluate=None, epochs=None, desc="gsmflow"):
    """Train a GSMFlowModel on ``data``'s trainval split. ``evaluate(model, epoch) -> float`` is called
    at the evaluation epochs; returns (model, [(epoch, score), ...])."""
    device = ctx.device
    torch.manual_seed(ctx.seed)
    x_all, y_all = data.subset("trainval")
    seen = data.seen_classes.to(device)
    att = data.attributes
    model = build_model(data, cfg, device)
    opt = adam(model.parameters(), device, cfg["lr"], cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg["lr_step_epochs"], gamma=cfg["lr_gamma"])
    # Class means of the real training features: the prototype targets (§2f).
    counts = torch.bincount(y_all, minlength=data.num_classes).clamp_min(1).to(x_all.dtype)
    means = torch.zeros(data.num_classes, data.feature_dim, device=device).index_add_(0, y_all, x_all)
    proto_target = (means / counts[:, None])[seen]
    g = ctx.generator(1)
    n, b, d = x_all.shape[0], min(cfg["batch_size"], x_all.shape[0]), data.feature_dim
    epochs = epochs or cfg["epochs"]
    history = []
    for epoch in tqdm(range(1, epochs + 1), desc=desc, disable=not ctx.progress, leave=False):
        model.train()
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(0, n - b + 1, b):  # full batches only, the remainder is dropped (§3)
            idx = perm[i:i + b]
            x, y = x_all[idx], y_all[idx]
            noise = torch.randn(b, d, generator=g).to(device)
            if cfg["perturbation_dropout"] > 0:
                noise = noise * (torch.rand(d, generator=g).to(device) > cfg["perturbation_dropout"])
            loss = model.nll(x + cfg["perturbation"] * noise, y, att)
            if cfg["proto_weight"] > 0:
                loss = loss + cfg["proto_weight"] * nn.functional.mse_loss(model.prototypes(att[seen]), proto_target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        if evaluate is not None and epoch >= cfg["eval_start_epoch"] and (
                epoch % cfg["eval_every_epochs"] == 0 or epoch == epochs):
            model.eval()
            history.append((epoch, float(evaluate(model, epoch))))
    model.eval()
    return model, history


def synthetic_budget(data, cfg):
    """Synthetic features per unseen class for ``data``: ``synth_ratio`` × the mean number of real
    trainval features per seen class when ``synth_ratio`` is set (so the budget follows the data),
    else the absolute ``synth_per_class``. Returns (count, record for results.json)."""
    real_per_seen = data.splits["trainval"].numel() / max(1, data.seen_classes.numel())
    if cfg["synth_ratio"] is not None:
        n = max(1, round(cfg["synth_ratio"] * real_per_seen))
    else:
        n = int(cfg["synth_per_class"])
    return n, {"per_unseen_class": n, "real_per_seen_class": round(real_per_seen, 2),
               "ratio": round(n / real_per_seen, 4)}


def evaluate_model(model, data, cfg, ctx, select=False, classifier_epochs=None):
    """Synthesize unseen features, train the final classifiers, return (ZSL/GZSL metrics in percent,
    the classifier epoch counts used).

    GZSL: a softmax over all classes trained on real trainval (seen) + synthetic unseen features;
    S/U/H on test_seen/test_unseen. ZSL T1: a classifier trained on synthetic unseen only, argmax
    over the unseen classes. With ``select`` each classifier keeps its best epoch on ``data``'s own
    test splits, which are the validation split's held-out data in the default protocol (and the
    real test split only for ``--select-on-test``, the original protocol); otherwise each trains
    for ``classifier_epochs`` (``{"gzsl": n, "zsl": n}``, e.g. the counts chosen on validation) or
    the configured number of epochs.
    """
    device = ctx.device
    unseen, seen = data.unseen_classes.to(device), data.seen_classes.to(device)
    g = ctx.generator(2)
    n_syn, _ = synthetic_budget(data, cfg)
    syn_x, syn_y = model.synthesize(data.attributes, unseen, n_syn, g)
    real_x, real_y = data.subset("trainval")
    xs, ys = data.subset("test_seen")
    xu, yu = data.subset("test_unseen")
    c = cfg["classifier"]
    epochs = classifier_epochs or {"gzsl": c["epochs"], "zsl": c["epochs"]}

    def gzsl(clf):
        with torch.no_grad():
            s = per_class_accuracy(predict(clf(xs), None, seen, cfg["calibration"]), ys)
            u = per_class_accuracy(predict(clf(xu), None, seen, cfg["calibration"]), yu)
        return s, u

    def zsl(m):
        with torch.no_grad():
            return per_class_accuracy(predict(m(xu), unseen), yu)

    clf, info_g = train_softmax_classifier(
        torch.cat([real_x, syn_x]), torch.cat([real_y, syn_y]), data.num_classes,
        c["epochs"] if select else epochs["gzsl"], c["lr"], c["batch_size"], generator=g,
        select_fn=(lambda m: harmonic_mean(*gzsl(m))) if select else None)
    s, u = gzsl(clf)
    zclf, info_z = train_softmax_classifier(syn_x, syn_y, data.num_classes, c["epochs"] if select else epochs["zsl"],
                                            c["lr"], c["batch_size"], generator=g, select_fn=zsl if select else None)
    metrics = {"zsl_t1": 100 * zsl(zclf), "gzsl_s": 100 * s, "gzsl_u": 100 * u, "gzsl_h": 100 * harmonic_mean(s, u)}
    used = {"gzsl": info_g["best_epoch"] + 1, "zsl": info_z["best_epoch"] + 1} if select else dict(epochs)
    return metrics, used


@register
class GSMFlowMethod:
    name = "gsmflow"
    setting = "zsl+gzsl"
    selection = "validation"
    settings = SETTINGS

    def run(self, data, config, ctx):
        t0 = time.perf_counter()
        data = data.normalized(config["feature_norm"]).to(ctx.device)
        _, budget = synthetic_budget(data, config)
        if ctx.select_on_test:
            # The original protocol: evaluate on the test split during training (each classifier
            # keeping its best test epoch), keep the best flow epoch.
            best = {}

            def on_test(model, epoch):
                m, used = evaluate_model(model, data, config, ctx, select=True)
                if not best or m["gzsl_h"] > best["metrics"]["gzsl_h"]:
                    best.update(metrics=m, epoch=epoch, classifier_epochs=used,
                                # a copy: on the CPU .cpu() would alias the weights still being trained
                                state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
                return m["gzsl_h"]

            _, history = train_flow(data, config, ctx, evaluate=on_test)
            return MethodResult(metrics=best["metrics"], state=best["state"],
                                selection={"on": "test (original protocol)", "epoch": best["epoch"],
                                           "classifier_epochs": best["classifier_epochs"], "history": history},
                                timings={"train_s": time.perf_counter() - t0}, info={"synthetic": budget})
        # Default: choose the number of flow epochs and each final classifier's number of epochs on
        # the validation split, then retrain on all trainval with those counts.
        val = data.validation_split(**config["validation"])
        chosen = {}

        def on_val(model, epoch):
            m, used = evaluate_model(model, val, config, ctx, select=True)
            chosen[epoch] = used
            return m["gzsl_h"]

        _, history = train_flow(val, config, ctx, desc="gsmflow (validation)", evaluate=on_val)
        best_epoch = max(history, key=lambda h: h[1])[0]
        t1 = time.perf_counter()
        model, _ = train_flow(data, config, ctx, epochs=best_epoch)
        t2 = time.perf_counter()
        metrics, used = evaluate_model(model, data, config, ctx, classifier_epochs=chosen[best_epoch])
        return MethodResult(metrics=metrics, state={k: v.cpu() for k, v in model.state_dict().items()},
                            selection={"on": "validation", "metric": "gzsl_h", "epoch": best_epoch,
                                       "classifier_epochs": used, "history": history,
                                       "classifier_history": [[e, chosen[e]] for e, _ in history]},
                            timings={"select_s": t1 - t0, "train_s": t2 - t1, "eval_s": time.perf_counter() - t2},
                            info={"synthetic": budget})
