"""Speed of every zslfast operator: the compiled extension vs the pure-PyTorch reference.

    python benchmarks/bench_ops.py [--quick] [--device cpu|cuda] [--json PATH]

Shapes are those the methods use (see the reference notes' hot-loop sections). For every op and pass
(forward, forward+backward) the reference and the extension are timed in one run, repeats
interleaved, medians reported; speedup = baseline time / extension time. Extra baselines: the dense
matrix-power random walk of the original GRW code, and the full N×C distance matrix for
nearest_prototype (also compared in peak memory).

Each op also gets a floor on this machine: the larger of FLOPs / measured GEMM rate and minimum bytes
moved / measured copy bandwidth; ext_over_floor is how far the extension is from it. FLOPs are those
of the cheapest formulation we know (a symmetric x·xᵀ counted at half price, as an ideal SYRK would
cost), so the floor is a lower bound for our algorithm, not a restatement of it.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timing  # noqa: E402
from zslfast import ops  # noqa: E402
from zslfast.ops import reference  # noqa: E402

F32 = 4  # bytes per element


class Case:
    """One op at one shape: callables per backend and pass, plus its FLOP and byte counts."""

    def __init__(self, op, shape, make, flops, bytes_, passes=("forward", "forward+backward"), extra=None):
        self.op, self.shape, self.make, self.flops, self.bytes = op, shape, make, flops, bytes_
        self.passes, self.extra = passes, extra or {}


def _runner(fn, inputs, backward):
    """A callable running fn(*inputs) (under no_grad for a forward pass) or forward+backward."""
    if not backward:
        def run():
            with torch.no_grad():
                fn(*inputs)
        return run
    grads = {}

    def run():
        out = fn(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        if "g" not in grads:  # fixed upstream gradients, drawn once
            grads["g"] = [torch.randn_like(o) for o in outs]
        torch.autograd.grad(outs, [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad],
                            grads["g"])
    return run


def _with_backend(name, fn):
    def call(*args):
        ops.set_backend(name)
        try:
            return fn(*args)
        finally:
            ops.set_backend("auto")
    return call


def cases(quick, device):
    def r(*shape, grad=True):
        return torch.rand(*shape, device=device).requires_grad_(grad)  # non-negative, like ReLU features

    out = []
    # GSMFlow: coupling of B=256 samples, L=1024 (half of 2048-d features).
    b, l = (256, 1024)
    out.append(Case("affine_coupling", f"B={b},L={l},atan", lambda: ((r(b, l), r(b, l), r(b, l)),
                    lambda x, s, t: ops.affine_coupling(x, s, t, 1.0, "atan")),
                    flops={"forward": 0, "forward+backward": 0},
                    bytes_={"forward": F32 * (4 * b * l + b), "forward+backward": F32 * (9 * b * l + 2 * b)}))
    # pairwise distances: batch vs class embeddings, and a square feature set.
    pd_shapes = [(1024, 200, 2048), (512, 512, 2048)] if quick else [(4096, 200, 2048), (2048, 2048, 2048)]
    for n, m, d in pd_shapes:
        for metric in ("sqeuclidean", "cosine"):
            out.append(Case("pairwise_distance", f"{n}x{d} vs {m}x{d},{metric}",
                            (lambda n=n, m=m, d=d, metric=metric: ((r(n, d), r(m, d)),
                             lambda x, y: ops.pairwise_distance(x, y, metric))),
                            flops={"forward": 2 * n * m * d, "forward+backward": 6 * n * m * d},
                            bytes_={"forward": F32 * (n * d + m * d + n * m),
                                    "forward+backward": F32 * 2 * (n * d + m * d + n * m)}))
    # nearest_prototype: SUN-sized evaluation (717 classes).
    n, c, d = (4000, 717, 2048) if quick else (20000, 717, 2048)
    out.append(Case("nearest_prototype", f"{n}x{d} vs {c}x{d},cosine",
                    lambda n=n, c=c, d=d: ((r(n, d, grad=False), r(c, d, grad=False)),
                                           lambda x, p: ops.nearest_prototype(x, p, "cosine")),
                    flops={"forward": 2 * n * c * d}, bytes_={"forward": F32 * (n * d + c * d) + 8 * n},
                    passes=("forward",), extra={"full_matrix": True}))
    # transition matrix over a generated feature set, self-transitions excluded (GRW's P_xx).
    m, d = (800, 2048) if quick else (2000, 2048)
    out.append(Case("transition_matrix", f"{m}x{d} to itself,cosine,exclude_self",
                    lambda m=m, d=d: ((r(m, d),), lambda x: ops.transition_matrix(x, x, 1.0, "cosine", True)),
                    # x·xᵀ is symmetric (m²d FLOPs at best); the self backward is one GEMM (W+Wᵀ)·x
                    flops={"forward": m * m * d, "forward+backward": 3 * m * m * d},
                    bytes_={"forward": F32 * (m * d + m * m), "forward+backward": F32 * 2 * (m * d + m * m)}))
    # random walk landing: K centers, M generated points, GRW's 5 steps.
    k, m, d, steps = (100, 800, 2048, 5) if quick else (200, 2000, 2048, 5)
    trans = 2 * k * m * d + m * m * d  # S_xc (shared by P_xc and P_cx) and the symmetric S_xx
    trans_bwd = 2 * 2 * k * m * d + 2 * m * m * d  # one GEMM pair for S_xc, one GEMM for S_xx
    walk = steps * 2 * k * m * m + (steps + 1) * 2 * k * m * k
    walk_bwd = 2 * (steps + 1) * k * m * k * 2 + steps * 2 * k * m * m * 2  # dP_xc, R init, R sweep, dP_xx
    out.append(Case("random_walk_landing", f"K={k},M={m},D={d},steps={steps},cosine",
                    lambda k=k, m=m, d=d, steps=steps: ((r(k, d), r(m, d)),
                                                        lambda c, x: ops.random_walk_landing(c, x, steps)),
                    flops={"forward": trans + walk, "forward+backward": trans + trans_bwd + walk + walk_bwd},
                    bytes_={"forward": F32 * ((k + m) * d + (steps + 1) * k * k + m * m),
                            "forward+backward": F32 * 2 * ((k + m) * d + (steps + 1) * k * k + m * m)},
                    extra={"dense": (lambda steps=steps: (lambda c, x: reference.random_walk_landing_dense(
                        c, x, steps)))()}))
    # attention_pool: SC-EGG's region attention, B images of C=2048 × R=196 (14×14) regions, SUN's
    # (A=102) and CUB's (A=312) attribute counts; the features need no gradient (as in SC-EGG).
    b, c, rr = (16 if quick else 64), 2048, 196
    for ds, a in (("SUN", 102), ("CUB", 312)):
        for red in ("mean", "none"):
            logits = 2 * a * c * rr * b
            pool = (2 * c * rr if red == "mean" else 2 * a * c * rr) * b
            out_elems = b * c if red == "mean" else b * a * c
            fb = b * c * rr  # feature elements: read once forward, once backward at least
            out.append(Case("attention_pool", f"{ds}:B={b},C={c},R={rr},A={a},{red}",
                            lambda a=a, red=red: ((r(b, c, rr, grad=False), r(a, c)),
                                                  lambda f, q: ops.attention_pool(f, q, True, red)),
                            flops={"forward": logits + pool, "forward+backward": 2 * (logits + pool)},
                            bytes_={"forward": F32 * (fb + a * c + b * a * rr + out_elems),
                                    "forward+backward": F32 * (2 * fb + 2 * a * c + 3 * b * a * rr + 2 * out_elems)}))
    return out


def run(args):
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_ops: --device cuda but no CUDA device is visible")
    if ops.backend(device) != "ext":
        sys.exit(f"bench_ops: the compiled extension is not available for {device} "
                 f"({ops.extension_info()}); build it with `pip install --no-build-isolation .`")
    torch.manual_seed(0)
    machine = timing.machine_description(device)
    rate = timing.matmul_rate(device)
    bw = timing.copy_bandwidth(device)
    print(f"machine: {machine}")
    print(f"measured GEMM rate {rate / 1e9:.1f} GFLOP/s, copy bandwidth {bw / 1e9:.2f} GB/s\n")
    min_repeats, budget = (5, 1.0) if args.quick else (15, 4.0)

    records = []
    header = f"{'op':<20} {'shape':<40} {'pass':<17} {'baseline':<19} {'base ms':>9} {'ext ms':>9} " \
             f"{'speedup':>8} {'floor ms':>9} {'ext/floor':>9}"
    print(header)
    print("-" * len(header))
    for case in cases(args.quick, device):
        if args.only and case.op not in args.only:
            continue
        inputs, fn = case.make()
        for pss in case.passes:
            backward = pss == "forward+backward"
            runners = [_runner(_with_backend("torch", fn), inputs, backward),
                       _runner(_with_backend("ext", fn), inputs, backward)]
            names = ["reference"]
            if "dense" in case.extra:
                runners.insert(1, _runner(case.extra["dense"], inputs, backward))
                names.append("dense_matrix_power")
            if case.extra.get("full_matrix"):
                runners.insert(1, _runner(
                    lambda x, p: reference.pairwise_distance(x, p, "cosine").argmin(1), inputs, backward))
                names.append("full_matrix")
            times = timing.compare(runners, device, min_repeats=min_repeats, budget_s=budget)
            ext_ms = times[-1]
            floor_ms = 1e3 * max(case.flops[pss] / rate, case.bytes[pss] / bw)
            for name, base_ms in zip(names, times[:-1]):
                rec = {"op": case.op, "shape": case.shape, "device": device, "pass": pss, "baseline": name,
                       "torch_ms": round(base_ms, 4), "ext_ms": round(ext_ms, 4),
                       "speedup": round(base_ms / ext_ms, 3), "floor_ms": round(floor_ms, 4),
                       "ext_over_floor": round(ext_ms / floor_ms, 2), "flops": case.flops[pss],
                       "min_bytes": case.bytes[pss], "machine": machine}
                records.append(rec)
                print(f"{case.op:<20} {case.shape:<40} {pss:<17} {name:<19} {base_ms:>9.3f} {ext_ms:>9.3f} "
                      f"{base_ms / ext_ms:>7.2f}x {floor_ms:>9.3f} {ext_ms / floor_ms:>9.2f}")
            if case.extra.get("full_matrix"):
                x, p = inputs
                mem_full = timing.peak_memory_bytes(
                    lambda: reference.pairwise_distance(x, p, "cosine").argmin(1), device)
                mem_ext = timing.peak_memory_bytes(lambda: ops.nearest_prototype(x, p, "cosine"), device)
                if mem_full is not None:
                    for rec in records[-len(names):]:
                        rec["peak_mem_ext_mb"] = round(mem_ext / 2 ** 20, 1)
                        rec["peak_mem_full_matrix_mb"] = round(mem_full / 2 ** 20, 1)
                    print(f"{'':<20} peak extra memory: extension {mem_ext / 2**20:.1f} MiB, "
                          f"full N×C matrix {mem_full / 2**20:.1f} MiB")
        del inputs
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(records, f, indent=1)
        os.replace(tmp, args.json)
        print(f"\nwrote {len(records)} records to {args.json}")
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats (under a minute)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", help="write the records to this path (atomically)")
    p.add_argument("--only", nargs="+", metavar="OP", help="benchmark only these operators")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
