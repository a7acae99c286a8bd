"""Scaling of one training step with the number of processes (``zslfast.distributed``): each
method's own step function, 1 process against 2 gloo processes on the same machine.

    python benchmarks/bench_ddp.py [--methods gsmflow,grw,cvc,scegg1,scegg3,classifier] [--steps 12]
                                   [--threads 2] [--json PATH]

Steps, each at a CPU-sized version of the method's real shape (``--quick`` shrinks them further):

- ``gsmflow``: one flow step (NLL of a batch of 512 AWA2-like 2048-d features, prototype loss, Adam);
- ``grw``: one GRW batch (D step, G step with the seen, creativity and four random-walk losses) at
  CUB-like shapes: K = 100 seen classes, 10 generated samples per class, B = 128;
- ``cvc``: one step of 4 episodes of 16 ways × 8 shots (2048-d features, 1600-wide generator);
- ``scegg1``: one SC-EGG stage-1 step (attribute attention over 7×7 maps of 2048 channels, B = 64);
- ``scegg3``: one SC-EGG stage-3 iteration (5 critic steps + generator step, C = 2048, 1024-wide
  networks, B = 64);
- ``classifier``: one step of the final softmax classifier (B = 512, 6144-d inputs, 717 classes).

Both runs use the whole machine: 1 process with ``--threads`` threads, 2 processes with
``--threads`` / 2 each. Reported: median ms per step (rank 0, a barrier before each step), the
speedup 1-process / 2-process. The batches, noise and therefore the losses are the same in both
(checked: the first step's loss agrees to 1e-4 relative). **Run nothing else meanwhile.**
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timing  # noqa: E402
from zslfast.distributed import parallel, sharded  # noqa: E402

METHODS = ("gsmflow", "grw", "cvc", "scegg1", "scegg3", "classifier")


def _first_loss(out):
    if isinstance(out, dict):
        return float(sum(v for v in out.values()))
    return float(out)


def build(method, quick):
    """A ``step()`` callable of ``method`` (see the module docstring), built in this process (in a
    process group: with the group's DDP wrappers and sharding)."""
    from zslfast.config import resolve_config
    from zslfast.engine import RunContext
    from zslfast.engine.samplers import BalancedBatches, EpisodeBatches, EpisodeSampler, ShuffledBatches

    ctx = RunContext(device="cpu", progress=False)
    g = torch.Generator().manual_seed(0)
    if method == "gsmflow":
        from zslfast.data import make_synthetic
        from zslfast.engine.recipe import Stage, stage_step
        from zslfast.models.gsmflow import build_model, flow_loss
        from zslfast.nn import class_means
        from zslfast.optim import adam

        data = make_synthetic(like="AWA2", seed=0)
        cfg = resolve_config("gsmflow", "synthetic", like="AWA2")
        cfg["batch_size"] = 128 if quick else 512
        x, y = data.subset("trainval")
        seen = data.seen_classes
        with ctx.init_scope():
            model = build_model(data, cfg, "cpu")
        opt = adam(model.parameters(), "cpu", cfg["lr"], cfg["weight_decay"])
        target = class_means(x, y, data.num_classes)[0][seen]
        loss = flow_loss(model, x, y, data.attributes, seen, target, cfg, ctx.rng("batch_order"))
        step = stage_step(Stage("gsmflow", {"model": model}, opt, None, loss=loss, epochs=1))
        batches = iter(ShuffledBatches(x.shape[0], cfg["batch_size"], g, "cpu", "drop").epoch())
        return lambda: step(next(batches))
    if method == "grw":
        from zslfast.data import make_synthetic
        from zslfast.models.grw import GRWTrainer

        data = make_synthetic(like="CUB", seed=0)
        cfg = resolve_config("grw", "CUB")
        k = 40 if quick else 100
        tr = GRWTrainer(data, cfg, ctx)
        idx = torch.nonzero(data.labels < k).squeeze(1)
        tr.start_task(k, torch.arange(k), data.features[idx], data.labels[idx])
        batches = iter([idx[torch.randperm(idx.numel(), generator=g)[:cfg["batch_size"]]] for _ in range(64)])

        def grw_step():
            b = next(batches)
            return tr.step(data.features[b], data.labels[b])
        return grw_step
    if method == "cvc":
        from zslfast.data import make_synthetic
        from zslfast.engine.recipe import Stage, stage_step
        from zslfast.models.cvc import CVCModel, _schedule, inductive_loss

        data = make_synthetic(like="CUB", seed=0)
        cfg = resolve_config("cvc", "synthetic", like="CUB")
        cfg.update(ways=16, shots=8, episodes_per_step=4)
        x, y = data.subset("trainval")
        with ctx.init_scope():
            model = CVCModel(data.attribute_dim, data.feature_dim, cfg["hidden"], cfg["init_std"], cfg["scale_init"])
        opt, _ = _schedule(model.parameters(), cfg, "cpu")
        step = stage_step(Stage("cvc", {"model": model}, opt, None, loss=inductive_loss(x, data.attributes, cfg),
                                epochs=1, grad_clip=cfg["grad_clip"]))
        batches = iter(EpisodeBatches(EpisodeSampler(y, g), 16, 8, 4, 10 ** 6).epoch())
        return lambda: step(next(batches))
    if method in ("scegg1", "scegg3"):
        from zslfast.engine.recipe import stage_step
        from zslfast.models import scegg
        from zslfast.nn.dazle import AttributeAttentionNet, DistillationHead

        c, r, a, k, s_cls, n = (512, 49, 102, 717, 645, 2048) if quick else (2048, 49, 102, 717, 645, 4096)
        cfg = resolve_config("scegg", "SUN")
        cfg["gan"]["hidden"] = 256 if quick else 1024
        att = torch.nn.functional.normalize(torch.rand(k, a, generator=g), dim=1)
        labels = torch.arange(n) % s_cls
        with ctx.init_scope():  # nn.Linear's default init draws from the global RNG
            net = AttributeAttentionNet(c, att, torch.randn(a, 300, generator=g), generator=g)
            head = DistillationHead(c, k, 512).requires_grad_(False)
            gan = scegg.VAEGAN(c, a, cfg["gan"]["hidden"])
        sampler = BalancedBatches(labels, cfg["batch_size"], torch.Generator().manual_seed(1), 1)
        if method == "scegg1":
            maps = torch.relu(torch.randn(n, c, r, generator=g))
            seen = torch.arange(s_cls)
            opt = scegg.rmsprop(net.parameters(), cfg["stage1"])
            pnet = parallel(net)

            def step1():
                idx = sampler.sample()
                local, glob = sharded(lambda i: pnet(maps[i])[:2], idx)
                loss = net.loss_of(local, glob, labels[idx], seen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss.detach()
            return step1
        cache = torch.rand(n, c, generator=g)
        model = scegg.SCEGGModel(net, head, gan)
        step = stage_step(scegg.gan_stage(model, cache, labels, att, torch.arange(s_cls, k), cfg,
                                          ctx.rng("gan_noise"), {"lambda": 10.0}))
        return lambda: step((0, [sampler.sample() for _ in range(cfg["gan"]["critic_iters"] + 1)]))
    if method == "classifier":
        from zslfast.eval.classifier import SoftmaxClassifier

        n, d, k, b = (4096, 1024, 200, 256) if quick else (20000, 6144, 717, 512)
        x, y = torch.randn(n, d, generator=g), torch.randint(k, (n,), generator=g)
        clf = SoftmaxClassifier(d, k, generator=g)
        net = parallel(clf)
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3, betas=(0.5, 0.999))
        batches = iter(ShuffledBatches(n, b, g, "cpu", "keep").epoch())

        def classifier_step():
            idx = next(batches)
            loss = torch.nn.functional.cross_entropy(sharded(lambda i: net(x[i]), idx), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()
        return classifier_step
    raise ValueError(method)


def time_steps(step, steps):
    """(median ms per step, first step's loss): two warm-up steps, then ``steps`` timed ones."""
    first = _first_loss(step())
    step()
    times = []
    for _ in range(steps):
        if dist.is_initialized():
            dist.barrier()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), first


def _rank(rank, size, port, method, args, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, args["threads"] // size))
    if size > 1:
        dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        ms, first = time_steps(build(method, args["quick"]), args["steps"])
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"ms": ms, "first_loss": first}, f)
    finally:
        if size > 1:
            dist.destroy_process_group()


def measure(method, size, args, tmp):
    from tests.distributed.launch import free_port

    out = os.path.join(tmp, f"{method}_{size}.json")
    mp.spawn(_rank, args=(size, free_port(), method, args, out), nprocs=size, join=True)
    with open(out) as f:
        return json.load(f)


def main(argv=None):
    import tempfile

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS), type=lambda s: s.split(","))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2, help="threads of the whole machine (1 process: all of them)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    spec = {"threads": args.threads, "steps": args.steps, "quick": args.quick}
    torch.set_num_threads(args.threads)  # so that the machine line names the 1-process thread count
    machine = timing.machine_description("cpu")
    print(f"# {machine}; 1 process x {args.threads} threads vs 2 processes x {max(1, args.threads // 2)}")
    print("| step | 1 process ms | 2 processes ms | speedup |")
    print("|---|---:|---:|---:|")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            one, two = measure(method, 1, spec, tmp), measure(method, 2, spec, tmp)
            gap = abs(one["first_loss"] - two["first_loss"]) / max(1.0, abs(one["first_loss"]))
            assert gap < 1e-4, (method, one["first_loss"], two["first_loss"])
            rec = {"method": method, "one_process_ms": one["ms"], "two_processes_ms": two["ms"],
                   "speedup": one["ms"] / two["ms"], "threads": args.threads, "steps": args.steps,
                   "first_loss_rel_gap": gap, "quick": args.quick, "machine": machine}
            records.append(rec)
            print(f"| {method} | {one['ms']:.1f} | {two['ms']:.1f} | {rec['speedup']:.2f}x |", flush=True)
    if args.json:
        from zslfast.io import write_json

        write_json(args.json, records)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
