"""SC-EGG's generative evaluation and GAN epoch at SUN's shapes: measured, against their floors and
against the original's formulation, and the whole run composed from them.

    python benchmarks/bench_generative.py [--quick] [--threads N] [--device cpu|cuda]
                                          [--classifier-epochs E] [--json PATH]

**One evaluation** (spec §1.6) at SUN's shapes: C = 2048 dense features, A = 102 attributes,
K = 717 classes (645 seen, 72 unseen), 10,320 trainval, 2,580 test-seen and 1,440 test-unseen
images, 400 synthetic features per unseen class (28,800), 4096-wide decoder, so classifier inputs
[x, Dec(x), Dec.hidden(x)] of D = 6,246; both final classifiers (Adam 5e-4, batch 400, N(0, 0.02))
with the test splits scored after every epoch, as ``--select-on-test`` and the original do.

- *zslfast*: the pieces :func:`zslfast.eval.generative_evaluation` runs for SC-EGG (one synthesis
  in one batch, the decoder augmentation once per evaluation, ``train_softmax_classifier`` with
  fused Adam and the test splits scored by its per-epoch ``select_fn``, U-way ZSL classifier).
- *original formulation* (TF-VAEGAN's ``CLASSIFIER`` as SC-EGG's ``train_SUN.py`` uses it, written
  here from the spec): synthesis class by class, the augmentation computed again by each of the
  two classifiers (GZSL: trainval + synthetic + test rows; ZSL: synthetic + test rows), Linear +
  LogSoftmax + NLL, PyTorch's default (unfused) Adam, batches from a wrap-around permutation, test
  predictions in batches of 400 and per-class accuracies class by class; U-way ZSL classifier.
- *zslfast before this version*: the same with a K-way ZSL classifier and unfused Adam (what the
  previous release ran).

Each classifier epoch costs the same, so the benchmark trains ``--classifier-epochs`` (default 3)
epochs per classifier, takes the median epoch, and composes the 25-epoch evaluation as
fixed part (synthesis, augmentation) + 25 × median epoch of each classifier.

**The floor** of an evaluation: its GEMM FLOPs at the measured GEMM rate (``timing.matmul_rate``:
2048³ float32 products) plus the fused Adam's memory traffic at the measured copy bandwidth
(``timing.copy_bandwidth``). FLOPs, counted by hand (and checked against PyTorch's
``FlopCounterMode`` on the same calls, ``flop_check`` in the JSON): synthesis 2·N_syn·(2A·H + H·C);
augmentation 2·N·(C·H + H·A) over the rows augmented; a classifier epoch 4·N_train·D·outputs
(forward and the weight gradient; the inputs need no gradient) plus 2·N_test·D·outputs for the
scoring. Adam traffic: 7 float32 words per parameter per step (read parameter, gradient and both
moments, write parameter and moments).

**One GAN epoch**: 2 feedback passes × ⌈10,320 / 64⌉ = 162 iterations of
:func:`zslfast.nn.vaegan.train_step` (cached dense features) and of the original formulation
(dense features recomputed from region maps per batch), the median iteration of ``--repeats``
timed ones × 324; floor: FLOPs of one iteration counted by PyTorch's profiler + the fused Adam's
traffic of its optimiser steps.

**End to end**: SC-EGG's released SUN budget under ``--select-on-test`` (the original's protocol:
the same number of trainings and evaluations on both sides), composed of measured parts: 2,000
stage-1 iterations (the same attention formulation on both sides: ours is timed and used for both),
zslfast's one dense pass over 14,340 images, 4,000 stage-2 iterations, 50 GAN epochs and 50
evaluations. ``--threads 1``: one thread each, as the issue's side-by-side run.
"""
import argparse
import os
import statistics
import sys
import time
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.oracles

import bench_train  # noqa: E402
import timing  # noqa: E402
from zslfast import ops  # noqa: E402
from zslfast.data.dataset import ZSLDataset  # noqa: E402
from zslfast.eval import classifier  # noqa: E402
from zslfast.io import write_json  # noqa: E402
from zslfast.eval.metrics import harmonic_mean, sharded_accuracy  # noqa: E402
from zslfast.models import scegg  # noqa: E402
from zslfast.nn.dazle import AttributeAttentionNet  # noqa: E402

ADAM_BYTES_PER_PARAM = 7 * 4


# ----------------------------------------------------------------------------------- the data
def sun_like(device, quick):
    """Dense features of SUN's sizes (random, in [0, 1] like the min-max scaled cache), its class
    attributes, and a VAEGAN in eval mode."""
    c, a, k, s, hidden = (512, 102, 717, 645, 1024) if quick else (2048, 102, 717, 645, 4096)
    n_tv, n_ts, n_tu = (10320, 2580, 1440)
    g = torch.Generator().manual_seed(0)
    seen_labels = torch.arange(n_tv + n_ts) % s
    unseen_labels = s + torch.arange(n_tu) % (k - s)
    labels = torch.cat([seen_labels, unseen_labels])
    feats = torch.rand(labels.numel(), c, generator=g)
    splits = {"trainval": torch.arange(n_tv), "test_seen": torch.arange(n_tv, n_tv + n_ts),
              "test_unseen": torch.arange(n_tv + n_ts, n_tv + n_ts + n_tu)}
    att = F.normalize(torch.rand(k, a, generator=g), dim=1)
    data = ZSLDataset("SUN-shaped", feats.to(device), labels.to(device), att.to(device),
                      [str(i) for i in range(k)], splits)
    torch.manual_seed(0)
    gan = scegg.VAEGAN(c, a, hidden).to(device).eval().requires_grad_(False)
    return data, gan, dict(C=c, A=a, K=k, S=s, U=k - s, H=hidden, tv=n_tv, ts=n_ts, tu=n_tu)


def synthesize_batched(gan, att):
    def synthesize(classes, n, g):  # zslfast's SC-EGG: one batch for all classes
        a = att[classes].repeat_interleave(n, 0)
        z = torch.randn(a.shape[0], att.shape[1], generator=g, device=g.device)
        return gan.generate(z, a), classes.repeat_interleave(n)
    return synthesize


# ------------------------------------------------------------------- the original formulation
def original_synthesis(gan, att, classes, n, g):
    """Class by class, as the released ``generate_syn_feature``."""
    feats, labels = [], []
    for c in classes.tolist():
        z = torch.randn(n, att.shape[1], generator=g, device=g.device)
        feats.append(gan.generate(z, att[c].expand(n, -1)))
        labels.append(torch.full((n,), c, dtype=torch.long, device=att.device))
    return torch.cat(feats), torch.cat(labels)


class OriginalClassifier:
    """TF-VAEGAN's ``CLASSIFIER`` as SC-EGG uses it (spec §1.6), written from the spec: the inputs
    augmented with the decoder at construction, Linear + LogSoftmax + NLL, default Adam(β1 0.5),
    wrap-around batches, test scored after every epoch in batches, per-class accuracy per class."""

    def __init__(self, gan, x, y, tests, num_classes, lr, batch, g):
        with torch.no_grad():
            self.x = gan.augment(x)
            self.tests = [(gan.augment(tx), ty) for tx, ty in tests]
        self.y, self.batch, self.g = y, batch, g
        self.model = nn.Sequential(nn.Linear(self.x.shape[1], num_classes, device=x.device), nn.LogSoftmax(1))
        nn.init.normal_(self.model[0].weight, 0, 0.02, generator=g)
        nn.init.zeros_(self.model[0].bias)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.5, 0.999))
        self.perm, self.pos = torch.randperm(self.x.shape[0], generator=g, device=g.device), 0

    def next_batch(self):
        if self.pos + self.batch > self.perm.numel():  # wrap around: the rest, then a new permutation
            rest = self.perm[self.pos:]
            self.perm, self.pos = torch.randperm(self.x.shape[0], generator=self.g, device=self.g.device), 0
            take = self.batch - rest.numel()
            idx = torch.cat([rest, self.perm[:take]])
            self.pos = take
        else:
            idx = self.perm[self.pos:self.pos + self.batch]
            self.pos += self.batch
        return self.x[idx], self.y[idx]

    def epoch(self):
        for _ in range(0, self.x.shape[0], self.batch):
            bx, by = self.next_batch()
            loss = F.nll_loss(self.model(bx), by)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        with torch.no_grad():
            accs = []
            for tx, ty in self.tests:
                pred = torch.cat([self.model(tx[i:i + self.batch]).argmax(1) for i in range(0, tx.shape[0], self.batch)])
                classes = torch.unique(ty)
                accs.append(float(torch.stack([(pred[ty == c] == c).float().mean() for c in classes]).mean()))
        return accs


# --------------------------------------------------------------------------------- measuring
def epoch_times(train_epoch, epochs, device):  # the original formulation's epochs
    """The wall time of each of ``epochs`` calls of ``train_epoch`` (ms)."""
    out = []
    for _ in range(epochs):
        timing.sync(device)
        t0 = time.perf_counter()
        train_epoch()
        timing.sync(device)
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def timed(fn, device):
    timing.sync(device)
    t0 = time.perf_counter()
    out = fn()
    timing.sync(device)
    return 1e3 * (time.perf_counter() - t0), out


def measure_evaluation(data, gan, dims, device, epochs, variant):
    """{"fixed_ms", "gzsl_epoch_ms", "zsl_epoch_ms"} of one evaluation: ``variant`` is ``zslfast``,
    ``original`` or ``previous`` (K-way ZSL classifier, unfused Adam)."""
    g = torch.Generator(device=device).manual_seed(3)
    att = data.attributes
    unseen, n = data.unseen_classes.to(device), 400
    lr, batch = 5e-4, 400
    xs, ys = data.subset("test_seen")
    xu, yu = data.subset("test_unseen")
    real_x, real_y = data.subset("trainval")
    if variant == "original":
        t_syn, (syn_x, syn_y) = timed(lambda: original_synthesis(gan, att, unseen, n, g), device)
        t_g, gz = timed(lambda: OriginalClassifier(gan, torch.cat([real_x, syn_x]), torch.cat([real_y, syn_y]),
                                                   [(xs, ys), (xu, yu)], dims["K"], lr, batch, g), device)
        zy = torch.searchsorted(unseen, syn_y)
        t_z, zc = timed(lambda: OriginalClassifier(gan, syn_x, zy, [(xu, torch.searchsorted(unseen, yu))], dims["U"],
                                                   lr, batch, g), device)
        return {"fixed_ms": t_syn + t_g + t_z, "synthesis_ms": t_syn, "augmentation_ms": t_g + t_z,
                "gzsl_epoch_ms": epoch_times(gz.epoch, epochs, device),
                "zsl_epoch_ms": epoch_times(zc.epoch, epochs, device)}
    # zslfast's own code (what generative_evaluation runs): the synthesis SC-EGG gives it, the
    # augmentation once, train_softmax_classifier with the per-epoch scoring as its select_fn
    t_syn, (syn_x, syn_y) = timed(lambda: synthesize_batched(gan, att)(unseen, n, g), device)
    with torch.no_grad():
        t_aug, (ax, arx, axs, axu) = timed(lambda: [gan.augment(t) for t in (syn_x, real_x, xs, xu)], device)
    k = dims["K"]

    def epochs_of(x, y, outputs, score):
        stamps = []

        def select(clf):
            value = score(clf)
            timing.sync(device)
            stamps.append(time.perf_counter())
            return value

        def fit():
            timing.sync(device)
            stamps.append(time.perf_counter())
            classifier.train_softmax_classifier(x, y, outputs, epochs, lr, batch, select_fn=select, generator=g,
                                                init="normal")
        if variant == "previous":  # the unfused Adam of the previous version
            with mock.patch.object(classifier, "adam", lambda params, dev, lr, **kw: torch.optim.Adam(params, lr=lr, **kw)):
                fit()
        else:
            fit()
        return [1e3 * (b - a) for a, b in zip(stamps, stamps[1:])]

    def gzsl_score(clf):
        s = sharded_accuracy(lambda b: clf(b).argmax(1), axs, ys, k)
        u = sharded_accuracy(lambda b: clf(b).argmax(1), axu, yu, k)
        return harmonic_mean(s, u)

    if variant == "zslfast":
        zy, zk = torch.searchsorted(unseen, syn_y), dims["U"]
        zscore = lambda clf: sharded_accuracy(lambda b: unseen[clf(b).argmax(1)], axu, yu, k)  # noqa: E731
    else:  # K-way, the argmax restricted to the unseen columns
        zy, zk = syn_y, k
        zscore = lambda clf: sharded_accuracy(lambda b: unseen[clf(b)[:, unseen].argmax(1)], axu, yu, k)  # noqa: E731
    return {"fixed_ms": t_syn + t_aug, "synthesis_ms": t_syn, "augmentation_ms": t_aug,
            "gzsl_epoch_ms": epochs_of(torch.cat([arx, ax]), torch.cat([real_y, syn_y]), k, gzsl_score),
            "zsl_epoch_ms": epochs_of(ax, zy, zk, zscore)}


def evaluation_floor(dims, rate, bandwidth, classifier_epochs=25):
    """(GEMM FLOPs, Adam bytes, floor ms) of one zslfast evaluation (module docstring)."""
    c, a, k, u, h = dims["C"], dims["A"], dims["K"], dims["U"], dims["H"]
    n_syn = 400 * u
    d = c + a + h
    n_g, n_z, n_test = dims["tv"] + n_syn, n_syn, dims["ts"] + dims["tu"]
    flops = 2 * n_syn * (2 * a * h + h * c)  # synthesis
    flops += 2 * (n_syn + dims["tv"] + n_test) * (c * h + h * a)  # augmentation, once
    flops += classifier_epochs * (4 * n_g * d * k + 2 * n_test * d * k)  # GZSL classifier
    flops += classifier_epochs * (4 * n_z * d * u + 2 * dims["tu"] * d * u)  # ZSL classifier, U-way
    steps = classifier_epochs * (-(-n_g // 400) * (d * k + k) + -(-n_z // 400) * (d * u + u))
    adam_bytes = ADAM_BYTES_PER_PARAM * steps
    return flops, adam_bytes, 1e3 * (flops / rate + adam_bytes / bandwidth)


def flop_check(data, gan, dims, device):
    """FlopCounterMode's count of the synthesis, the augmentation and one GZSL classifier step,
    against the hand formulas of :func:`evaluation_floor` (the two must agree)."""
    g = torch.Generator(device=device).manual_seed(0)
    unseen = data.unseen_classes.to(device)
    with FlopCounterMode(display=False) as fc:
        x, _ = synthesize_batched(gan, data.attributes)(unseen, 400, g)
    syn = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        xa = gan.augment(x)
    aug = fc.get_total_flops()
    lin = nn.Linear(xa.shape[1], dims["K"], device=device)
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(lin(xa[:400]), torch.zeros(400, dtype=torch.long, device=device)).backward()
    step = fc.get_total_flops()
    c, a, h, k, n = dims["C"], dims["A"], dims["H"], dims["K"], x.shape[0]
    d = xa.shape[1]
    return {"synthesis": [syn, 2 * n * (2 * a * h + h * c)], "augmentation": [aug, 2 * n * (c * h + h * a)],
            "gzsl_step": [step, 4 * 400 * d * k]}


def profiled_flops(fn):
    """The FLOPs of the matrix products ``fn`` runs, backward and double backward included, as
    PyTorch's profiler counts them (FlopCounterMode cannot follow the gradient penalty's
    ``autograd.grad``)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return sum(e.flops or 0 for e in prof.events())


def stage1_step(dims, device, quick):
    """One stage-1 RMSprop step on 64 region maps at SUN's shapes (zslfast's formulation)."""
    c, r = (512, 49) if quick else (2048, 196)
    g = torch.Generator().manual_seed(0)
    att = F.normalize(torch.rand(dims["K"], dims["A"], generator=g), dim=1)
    net = AttributeAttentionNet(c, att, torch.randn(dims["A"], 300, generator=g), generator=g).to(device)
    maps = torch.relu(torch.randn(64, c, r, generator=g)).to(device)
    labels = (torch.arange(64) % dims["S"]).to(device)
    seen = torch.arange(dims["S"], device=device)
    opt = scegg.rmsprop(net.parameters(), {"lr": 1e-4, "weight_decay": 1e-4, "momentum": 0.9})

    def step():
        local, glob, _ = net(maps)
        loss = net.loss_of(local, glob, labels, seen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="C=512, 1024-wide networks, region maps 7x7")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--classifier-epochs", type=int, default=3, help="epochs timed per classifier (default 3)")
    p.add_argument("--repeats", type=int, default=5, help="timed stage-1/2/3 iterations per side (default 5)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = timing.machine_description(device)
    rate, bandwidth = timing.matmul_rate(device), timing.copy_bandwidth(device)
    print(f"machine: {machine}; GEMM {rate / 1e9:.1f} GFLOP/s, copy {bandwidth / 1e9:.1f} GB/s; "
          f"backend {ops.backend(device)}")
    data, gan, dims = sun_like(device, args.quick)
    print(f"shapes: {dims}")
    record = {"machine": machine, "device": args.device, "threads": torch.get_num_threads(), "dims": dims,
              "gemm_flops_per_s": rate, "copy_bytes_per_s": bandwidth, "classifier_epochs_timed": args.classifier_epochs,
              "flop_check": flop_check(data, gan, dims, device)}

    # ---- one evaluation
    evals = {}
    for variant in ("zslfast", "original", "previous"):
        m = measure_evaluation(data, gan, dims, device, args.classifier_epochs, variant)
        m["gzsl_epoch_median_ms"] = statistics.median(m["gzsl_epoch_ms"])
        m["zsl_epoch_median_ms"] = statistics.median(m["zsl_epoch_ms"])
        m["evaluation_ms"] = m["fixed_ms"] + 25 * (m["gzsl_epoch_median_ms"] + m["zsl_epoch_median_ms"])
        evals[variant] = m
        print(f"evaluation, {variant:8s}: {m['evaluation_ms'] / 1e3:8.1f} s  (synthesis {m['synthesis_ms']:.0f} ms, "
              f"augmentation {m['augmentation_ms']:.0f} ms, GZSL epoch {m['gzsl_epoch_median_ms']:.0f} ms, "
              f"ZSL epoch {m['zsl_epoch_median_ms']:.0f} ms; 25 epochs each)")
    flops, adam_bytes, floor = evaluation_floor(dims, rate, bandwidth)
    ours = evals["zslfast"]["evaluation_ms"]
    print(f"evaluation floor: {flops / 1e12:.2f} TFLOP + {adam_bytes / 1e9:.0f} GB of Adam traffic = "
          f"{floor / 1e3:.1f} s; zslfast at {ours / floor:.2f}x the floor, original formulation "
          f"{evals['original']['evaluation_ms'] / ours:.2f}x slower, previous zslfast "
          f"{evals['previous']['evaluation_ms'] / ours:.2f}x slower")
    record.update(evaluation=evals, evaluation_floor={"flops": flops, "adam_bytes": adam_bytes, "ms": floor,
                                                      "ratio": ours / floor})
    # The GZSL classifier's two products at their own shapes: the 2048³ rate is not reached by the
    # weight gradient, whose inner dimension is the batch (400)
    d = dims["C"] + dims["A"] + dims["H"]
    x, w, go = (torch.randn(400, d, device=device), torch.randn(dims["K"], d, device=device),
                torch.randn(400, dims["K"], device=device))
    fwd, wgrad = timing.compare([lambda: x @ w.T, lambda: go.T @ x], device, warmup=2, min_repeats=20, budget_s=2.0)
    rates = {"forward_gflops": 2 * 400 * d * dims["K"] / fwd / 1e6, "weight_grad_gflops": 2 * 400 * d * dims["K"] / wgrad / 1e6}
    record["gzsl_step_gemm_rates"] = rates
    print(f"GZSL classifier products at their shapes: forward {rates['forward_gflops']:.1f} GFLOP/s, weight "
          f"gradient {rates['weight_grad_gflops']:.1f} GFLOP/s (2048³: {rate / 1e9:.1f})")

    # ---- stage iterations: original vs cached (bench_train's setup), stage 1, the GAN epoch floor
    steps, shape, cfg, noise, _ = bench_train.scegg_steps(device, args.quick)
    iters = {}
    for what, (orig, cached) in steps.items():
        t = timing.compare([orig, cached], device, warmup=1, min_repeats=args.repeats, budget_s=0.0)
        iters[what] = {"original_ms": t[0], "zslfast_ms": t[1]}
        print(f"{what}: original {t[0]:.1f} ms, zslfast {t[1]:.1f} ms ({t[0] / t[1]:.2f}x)")
    s1 = stage1_step(dims, device, args.quick)
    iters["stage-1 iteration"] = {"zslfast_ms": timing.compare([s1], device, warmup=1, min_repeats=args.repeats,
                                                                budget_s=0.0)[0]}
    s3 = next(k for k in steps if k.startswith("stage-3"))
    s2 = next(k for k in steps if k.startswith("stage-2"))
    iteration_flops = profiled_flops(steps[s3][1])
    gan_params = sum(p.numel() for p in scegg.VAEGAN(dims["C"], dims["A"], dims["H"]).parameters())
    # optimiser steps per iteration: D and Dec 5 times each (Dec's step per critic batch), E, G, Dec once
    per_net = {n: sum(p.numel() for p in getattr(scegg.VAEGAN(dims["C"], dims["A"], dims["H"]), n).parameters())
               for n in ("E", "G", "D", "Dec")}
    adam_iter = ADAM_BYTES_PER_PARAM * (5 * per_net["D"] + 6 * per_net["Dec"] + per_net["E"] + per_net["G"])
    it_floor = 1e3 * (iteration_flops / rate + adam_iter / bandwidth)
    per_epoch = 2 * -(-dims["tv"] // 64)
    gan_epoch = {"iterations": per_epoch, "zslfast_ms": per_epoch * iters[s3]["zslfast_ms"],
                 "original_ms": per_epoch * iters[s3]["original_ms"], "floor_ms": per_epoch * it_floor,
                 "iteration_flops": iteration_flops, "iteration_adam_bytes": adam_iter, "gan_params": gan_params}
    print(f"GAN epoch ({per_epoch} iterations): zslfast {gan_epoch['zslfast_ms'] / 1e3:.1f} s, original "
          f"{gan_epoch['original_ms'] / 1e3:.1f} s, floor {gan_epoch['floor_ms'] / 1e3:.1f} s "
          f"({iteration_flops / 1e9:.1f} GFLOP + {adam_iter / 1e9:.2f} GB Adam per iteration); zslfast at "
          f"{gan_epoch['zslfast_ms'] / gan_epoch['floor_ms']:.2f}x the floor")
    record.update(iterations=iters, gan_epoch=gan_epoch, shape=shape)

    # ---- end to end: SUN's released budget under --select-on-test
    dense_ms = None
    if not args.quick:  # one dense pass over SUN's 14,340 images, timed on 256 and scaled
        net = AttributeAttentionNet(2048, data.attributes.cpu(), torch.randn(dims["A"], 300)).to(device)
        maps = torch.relu(torch.randn(256, 2048, 196)).to(device)
        from zslfast.nn.dazle import dense_pass

        class Whole:
            def blocks(self, block):
                yield None, maps
        with torch.no_grad():
            dense_ms = timing.compare([lambda: dense_pass(net, Whole())], device, warmup=1, min_repeats=3,
                                      budget_s=0.0)[0] * 14340 / 256
    e2e = {}
    for side, ev in (("zslfast", "zslfast"), ("original", "original")):
        e2e[side] = {"stage1_s": 2000 * iters["stage-1 iteration"]["zslfast_ms"] / 1e3,
                     "dense_s": (dense_ms or 0) / 1e3 if side == "zslfast" else 0.0,
                     "stage2_s": 4000 * iters[s2][f"{side}_ms"] / 1e3,
                     "stage3_s": 50 * gan_epoch[f"{side}_ms"] / 1e3,
                     "evaluations_s": 50 * evals[ev]["evaluation_ms"] / 1e3}
        e2e[side]["total_s"] = sum(e2e[side].values())
    record["end_to_end_sun_select_on_test"] = e2e
    for side, parts in e2e.items():
        print(f"end to end ({side}): " + ", ".join(f"{k[:-2]} {v / 3600:.2f} h" for k, v in parts.items()))
    print(f"end to end: zslfast {e2e['original']['total_s'] / e2e['zslfast']['total_s']:.2f}x faster than the "
          f"original formulation")
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
