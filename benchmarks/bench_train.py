"""Training-step speed of zslfast's method building blocks against their original formulations.

    python benchmarks/bench_train.py --method gsmflow|grw [--quick] [--device cpu|cuda] [--json PATH]

gsmflow: one training step (forward, GSMFlow's NLL, backward, Adam step) of the conditional flow,
zslfast's ``ConditionalFlow`` vs the same architecture built from FrEIA ``GLOWCouplingBlock``s (the
original code's library; needs ``pip install freia``), at the GSMFlow AWA2 shape: B=256, 2048-d
features, K=3 blocks, 2048-wide subnets, 1024-d condition, labels from 40 seen classes. zslfast
is timed twice: with the condition given per sample (as FrEIA gets it, isolating the fused
coupling) and per class with ``cond_index`` (its intended use: each subnet's condition projection
computed for the ≤ 40 classes in a batch instead of 256 samples). Also sampling throughput:
reverse passes generating 4096 features of one unseen class (zslfast: one condition row, FrEIA: the
condition repeated per sample, as the original code does). Medians of interleaved repeats.

grw: one GRW-CZSL training batch (D step, then the G step with the seen, creativity and four
random-walk losses, learnable dictionary off) at SUN's last-task scale: K=658 seen classes (SUN's
real attributes, d_a=102), 10 generated samples per class (M=6580 walk points), B=128 real
2048-d features, 5 walk steps. zslfast's formulation vs the original code's (explicit matrix
powers P_xx^t, D run on B×K repeated attribute rows, Python loops over classes), both in
``zslfast.models.grw`` and checked equal by the tests; the same weights, interleaved repeats, plus
the extra peak memory of one batch of each. ``--quick``: K=100, CUB-like sizes.
"""
import argparse
import json
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.oracles

import timing  # noqa: E402
from zslfast import ops  # noqa: E402
from zslfast.nn import ConditionalFlow  # noqa: E402


def freia_flow(dim, cond_dim, blocks, hidden):
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    def subnet(c_in, c_out):
        return nn.Sequential(nn.Linear(c_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, c_out))

    inn = Ff.SequenceINN(dim)
    for _ in range(blocks):
        inn.append(Fm.GLOWCouplingBlock, cond=0, cond_shape=(cond_dim,), subnet_constructor=subnet, clamp=1.0)
    for p in inn.parameters():
        nn.init.normal_(p, std=0.01)
    return inn


def nll(z, logdet):
    return (z ** 2).mean() / 2 - logdet.mean() / z.shape[1]


def bench_gsmflow(args):
    device = args.device
    b, dim, k, hidden, cond_dim, classes = (64, 1024, 2, 1024, 512, 40) if args.quick else (256, 2048, 3, 2048, 1024, 40)
    torch.manual_seed(0)
    ours = ConditionalFlow(dim, cond_dim, k, hidden, clamp=1.0, clamp_mode="atan", init_std=0.01).to(device)
    theirs = freia_flow(dim, cond_dim, k, hidden).to(device)
    # Both sides use the same fused Adam: the default CPU Adam allocates several full-size temporaries
    # per step and took half the step time, hiding the flows being compared.
    opt_ours = torch.optim.Adam(ours.parameters(), lr=3e-4, weight_decay=3e-6, fused=True)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=3e-4, weight_decay=3e-6, fused=True)
    x = torch.rand(b, dim, device=device)
    class_cond = torch.rand(classes, cond_dim, device=device)
    labels = torch.randint(0, classes, (b,), device=device)

    def step_ours_per_class():
        opt_ours.zero_grad(set_to_none=True)
        nll(*ours(x, class_cond, cond_index=labels)).backward()
        opt_ours.step()

    def step_ours_per_sample():
        opt_ours.zero_grad(set_to_none=True)
        nll(*ours(x, class_cond[labels])).backward()
        opt_ours.step()

    def step_freia():
        opt_theirs.zero_grad(set_to_none=True)
        nll(*theirs(x, c=[class_cond[labels]])).backward()
        opt_theirs.step()

    n_sample = 1024 if args.quick else 4096
    z = torch.randn(n_sample, dim, device=device)

    def sample_ours():
        with torch.no_grad():
            ours(z, class_cond[:1], rev=True)

    def sample_freia():
        with torch.no_grad():
            theirs(z, c=[class_cond[:1].expand(n_sample, cond_dim)], rev=True)

    reps, budget = (5, 1.0) if args.quick else (10, 10.0)
    t = timing.compare([step_freia, step_ours_per_sample, step_ours_per_class], device, warmup=2,
                       min_repeats=reps, budget_s=budget)
    s = timing.compare([sample_freia, sample_ours], device, warmup=1, min_repeats=reps, budget_s=budget / 2)
    shape = f"B={b},D={dim},K={k},hidden={hidden},cond={cond_dim},classes={classes}"
    machine = timing.machine_description(device)
    records = [
        {"method": "gsmflow", "what": "train step, per-sample condition", "shape": shape, "device": device,
         "baseline": "FrEIA GLOWCouplingBlock flow", "baseline_ms": t[0], "ours_ms": t[1], "speedup": t[0] / t[1],
         "machine": machine, "backend": ops.backend(device)},
        {"method": "gsmflow", "what": "train step, per-class condition (cond_index)", "shape": shape,
         "device": device, "baseline": "FrEIA GLOWCouplingBlock flow", "baseline_ms": t[0], "ours_ms": t[2],
         "speedup": t[0] / t[2], "machine": machine, "backend": ops.backend(device)},
        {"method": "gsmflow", "what": f"sampling {n_sample} features of one class", "shape": shape,
         "device": device, "baseline": "FrEIA GLOWCouplingBlock flow", "baseline_ms": s[0], "ours_ms": s[1],
         "speedup": s[0] / s[1], "baseline_samples_per_s": n_sample / s[0] * 1e3,
         "ours_samples_per_s": n_sample / s[1] * 1e3, "machine": machine, "backend": ops.backend(device)},
    ]
    print(f"machine: {machine}; zslfast backend {ops.backend(device)}; {shape}")
    for r in records:
        extra = (f"  ({r['baseline_samples_per_s']:.0f} vs {r['ours_samples_per_s']:.0f} samples/s)"
                 if "ours_samples_per_s" in r else "")
        print(f"{r['what']:<48} FrEIA {r['baseline_ms']:9.1f} ms   zslfast {r['ours_ms']:9.1f} ms   "
              f"{r['speedup']:5.2f}x{extra}")
    return records


def bench_grw(args):
    from zslfast.config import resolve_config
    from zslfast.data import make_synthetic
    from tests.oracles.grw_original import OriginalFormulation
    from zslfast.engine import RunContext
    from zslfast.models.grw import Formulation, GRWTrainer

    device = torch.device(args.device)
    like, k = ("CUB", 100) if args.quick else ("SUN", 658)
    data = make_synthetic(like=like, seed=0)
    cfg = resolve_config("grw", like)
    b = cfg["batch_size"]
    trainers = {}
    for formulation in ("original", "zslfast"):
        f = {"original": OriginalFormulation, "zslfast": Formulation}[formulation]()
        tr = GRWTrainer(data.to(device), cfg, RunContext(device=device, progress=False), formulation=f)
        idx = torch.nonzero(data.labels < k).squeeze(1)
        tr.start_task(k, torch.arange(k), data.features[idx].to(device), data.labels[idx].to(device))
        trainers[formulation] = tr
    gen = torch.Generator().manual_seed(0)
    batch = idx[torch.randperm(idx.numel(), generator=gen)[:b]]
    x, y = data.features[batch].to(device), data.labels[batch].to(device)
    steps = [lambda tr=trainers[f]: tr.step(x, y) for f in ("original", "zslfast")]
    # One step of each measures its extra peak memory and serves as warm-up.
    peak = [timing.peak_memory_bytes(fn, device) for fn in steps]
    reps = 10 if args.quick else args.repeats
    t = timing.compare(steps, device, warmup=0, min_repeats=reps, budget_s=0.0)
    m = k * cfg["rw"]["samples_per_class"]
    shape = (f"K={k},M={m},B={b},D={data.feature_dim},d_a={data.attribute_dim},steps={cfg['rw']['steps']},"
             f"like={like}")
    machine = timing.machine_description(device)
    record = {"method": "grw", "what": "train batch (D step + G step, all losses)", "shape": shape,
              "device": args.device, "baseline": "original formulation (dense P_xx^t, repeated D, loops)",
              "baseline_ms": t[0], "ours_ms": t[1], "speedup": t[0] / t[1], "repeats": reps,
              "baseline_peak_mib": peak[0] / 2 ** 20 if peak[0] is not None else None,
              "ours_peak_mib": peak[1] / 2 ** 20 if peak[1] is not None else None,
              "machine": machine, "backend": ops.backend(device)}
    print(f"machine: {machine}; zslfast backend {ops.backend(device)}; {shape}; {reps} repeats")
    mem = ("" if peak[0] is None else
           f"   peak extra memory {record['baseline_peak_mib']:.0f} MiB vs {record['ours_peak_mib']:.0f} MiB")
    print(f"{record['what']}: original {t[0]:9.1f} ms   zslfast {t[1]:9.1f} ms   {t[0] / t[1]:5.2f}x{mem}")
    return [record]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=["gsmflow", "grw"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=3, help="grw: timed repeats of each side (default 3; the "
                   "original formulation takes minutes per batch on a CPU)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.method == "gsmflow":
        try:
            import FrEIA  # noqa: F401
        except ImportError:
            sys.exit("bench_train: the FrEIA baseline needs `pip install freia`")
        records = bench_gsmflow(args)
    else:
        records = bench_grw(args)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(records, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
