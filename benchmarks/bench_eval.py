"""GZSL evaluation at growing scale: time and peak memory of zslfast's blocked, sharded evaluation
(1 and 2 processes) against scoring the whole test set at once.

    python benchmarks/bench_eval.py [--sizes 20000,50000,200000] [--classes 21000] [--seen 1000]
                                    [--dim 2048] [--full-max 50000] [--repeats 3] [--device cpu|cuda]
                                    [--json PATH]

The task is ImageNet-21K-shaped GZSL: N test features (half of seen classes, half of unseen) of
``--dim`` floats scored by cosine against ``--classes`` class prototypes (``--seen`` of them seen),
float32. The metrics are ZSL T1 (argmax over the unseen classes) and GZSL S, U, H (argmax over all
classes), per-class mean accuracies, computed three ways:

- ``full``: the [N, C] score matrix at once, then argmaxes and per-class accuracies (what research
  code does); run only up to ``--full-max`` rows (200k × 21k float32 is 16.8 GB on its own);
- ``blocked``: :func:`zslfast.eval.metrics.zsl_gzsl_metrics`, one process: blocks of 8192 rows,
  per-class integer counts, memory O(block × C);
- ``blocked x2``: the same in 2 gloo processes (``--device cpu``; one thread each on a CPU), each
  rank scoring its contiguous half of the rows and the counts all-reduced: what a ``torchrun`` job's
  evaluation does.

All three give the same metrics (checked). Reported per mode: median wall time of ``--repeats``
evaluations (the slowest rank's), the extra peak memory of one evaluation (the largest rank's,
measured as in ``timing.peak_memory_bytes``), and ``ext/floor`` = time / (2·N·C·D FLOPs at the
machine's measured GEMM rate): the score GEMMs are the floor, the rest (normalisation, argmax,
counts) is the overhead. **Run nothing else meanwhile.**
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timing  # noqa: E402
from zslfast.data.dataset import ZSLDataset  # noqa: E402
from zslfast.eval.metrics import harmonic_mean, per_class_accuracy, predict, zsl_gzsl_metrics  # noqa: E402


def make_task(n, classes, seen, dim, device, seed=0):
    """(dataset, unit prototypes [C, D]): test features = prototype of the label + noise, so the
    accuracies are well away from 0 and 1 and a wrong count would show."""
    g = torch.Generator(device=device).manual_seed(seed)
    protos = F.normalize(torch.randn(classes, dim, generator=g, device=device), dim=1)
    half = n // 2
    labels = torch.cat([torch.randint(seen, (half,), generator=g, device=device),
                        torch.randint(seen, classes, (n - half,), generator=g, device=device),
                        torch.arange(seen, device=device)])  # one training row per seen class
    features = protos[labels] + 0.22 * torch.randn(labels.numel(), dim, generator=g, device=device)
    splits = {"trainval": torch.arange(n, n + seen), "test_seen": torch.arange(half),
              "test_unseen": torch.arange(half, n)}
    data = ZSLDataset(name="bench", features=features, labels=labels, attributes=torch.zeros(classes, 1, device=device),
                      class_names=[str(i) for i in range(classes)], splits=splits)
    return data, protos


def blocked(data, protos):
    return zsl_gzsl_metrics(lambda x: F.normalize(x, dim=1) @ protos.T, data)


def full(data, protos):
    """The same metrics as :func:`zsl_gzsl_metrics` (ZSL over the unseen test classes, GZSL over
    all classes), from the whole score matrix."""
    scores = F.normalize(data.features, dim=1) @ protos.T  # [N, C] at once
    unseen_cls = data.unseen_classes
    ts, tu = data.splits["test_seen"], data.splits["test_unseen"]
    y = data.labels
    s = per_class_accuracy(predict(scores[ts]), y[ts])
    u = per_class_accuracy(predict(scores[tu]), y[tu])
    t1 = per_class_accuracy(predict(scores[tu], unseen_cls), y[tu])
    return {"zsl_t1": 100 * t1, "gzsl_s": 100 * s, "gzsl_u": 100 * u, "gzsl_h": 100 * harmonic_mean(s, u)}


def measure(fn, repeats, device):
    """(median seconds, extra peak bytes, metrics) of ``fn()``; the first call is the memory one."""
    box = {}
    peak = timing.peak_memory_bytes(lambda: box.setdefault("m", fn()), device)
    times = []
    for _ in range(repeats):
        if dist.is_initialized():
            dist.barrier()
        timing.sync(device)
        t0 = time.perf_counter()
        fn()
        timing.sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), peak, box["m"]


def _rank(rank, size, port, args, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        data, protos = make_task(args["n"], args["classes"], args["seen"], args["dim"], "cpu")
        t, peak, metrics = measure(lambda: blocked(data, protos), args["repeats"], "cpu")
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({"s": t, "peak": peak, "metrics": metrics}, f)
    finally:
        dist.destroy_process_group()


def two_processes(n, args, tmp):
    from tests.distributed.launch import free_port

    spec = {"n": n, "classes": args.classes, "seen": args.seen, "dim": args.dim, "repeats": args.repeats}
    mp.spawn(_rank, args=(2, free_port(), spec, tmp), nprocs=2, join=True)
    ranks = [json.load(open(os.path.join(tmp, f"rank{r}.json"))) for r in range(2)]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    return max(r["s"] for r in ranks), max(r["peak"] or 0 for r in ranks), ranks[0]["metrics"]


def run(args):
    import tempfile

    device = args.device
    rate = timing.matmul_rate(device)
    machine = timing.machine_description(device)
    print(f"# {machine}; GEMM rate {rate / 1e9:.1f} GFLOP/s; C={args.classes} ({args.seen} seen), D={args.dim}")
    print("| N | mode | time s | extra peak MiB | ext/floor | T1 | H |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    records = []
    for n in args.sizes:
        data, protos = make_task(n, args.classes, args.seen, args.dim, device)
        floor = 2 * n * args.classes * args.dim / rate
        modes = []
        if n <= args.full_max:
            modes.append(("full", lambda: measure(lambda: full(data, protos), args.repeats, device)))
        modes.append(("blocked", lambda: measure(lambda: blocked(data, protos), args.repeats, device)))
        reference = None
        for mode, go in modes:
            t, peak, metrics = go()
            records.append(_record(n, mode, t, peak, floor, metrics, args, machine))
            reference = reference or metrics
            assert metrics == reference, (mode, metrics, reference)
        if args.device == "cpu" and 2 in args.processes:
            del data, protos
            with tempfile.TemporaryDirectory() as tmp:
                t, peak, metrics = two_processes(n, args, tmp)
            assert metrics == reference, ("blocked x2", metrics, reference)
            records.append(_record(n, "blocked x2", t, peak, floor, metrics, args, machine))
    if args.json:
        from zslfast.io import write_json

        write_json(args.json, records)
        print(f"wrote {args.json}")


def _record(n, mode, t, peak, floor, metrics, args, machine):
    r = {"n": n, "classes": args.classes, "seen": args.seen, "dim": args.dim, "mode": mode, "seconds": t,
         "extra_peak_mib": None if peak is None else peak / 2 ** 20, "floor_s": floor, "ext_over_floor": t / floor,
         "metrics": metrics, "repeats": args.repeats, "machine": machine}
    mib = "n/a" if peak is None else f"{peak / 2 ** 20:.0f}"
    print(f"| {n} | {mode} | {t:.2f} | {mib} | {t / floor:.2f} | {metrics['zsl_t1']:.2f} | {metrics['gzsl_h']:.2f} |",
          flush=True)
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="20000,50000,200000", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--classes", type=int, default=21000)
    p.add_argument("--seen", type=int, default=1000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--full-max", type=int, default=50000, help="largest N scored as one [N, C] matrix")
    p.add_argument("--processes", default="1,2", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", help="write the records to this path (atomically)")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
