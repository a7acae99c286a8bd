"""Training-step speed of zslfast's method building blocks against their original formulations.

    python benchmarks/bench_train.py --method gsmflow|grw|scegg|tfvaegan|clswgan [--quick] [--device cpu|cuda]
                                     [--json PATH]

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

scegg: one stage-3 iteration (5 critic steps and the generator step, each on a fresh class-balanced
batch, §1.5 of sc_egg_spec.md) and one stage-2 iteration (the distillation head's MSE step), at
SUN's shapes (B=64, C=2048, R=196, A=102, K=717, 645 seen classes, 4096-wide TF-VAEGAN networks):
zslfast's cached pipeline (dense features and teacher logits computed once) against the original
formulation (``tests/oracles/scegg_original.py``: every batch's dense features recomputed from its
region maps with the frozen stage-1 net, and the teacher's forward run again in stage 2). Both start
from the same weights; the first step's losses are compared (the tests check the two equal in
float64). The original's region maps come from a pool of ``--pool`` images (a gather from a pool
larger than every cache costs what a gather from the full 23 GB costs); the resident data of both
at SUN's full size (14,340 images) is computed, the extra peak memory of a step measured.
``--quick``: C=512, R=49, 256-wide networks.

tfvaegan, clswgan: one GAN iteration (5 critic steps and the generator step; TF-VAEGAN's feedback
pass, f-CLSWGAN's classification loss) at CUB's shapes (B=64, 2048-d features, A=312, 150 seen
classes, 4096-wide networks, CUB's released settings): zslfast's step (one critic pass over fake
and real rows, the critic's closed-form input gradient, one backward per loss, fused Adam) against
the released formulation in plain PyTorch (``tests/oracles/gan_original.py``: separate backward
passes, autograd's double backward for the penalty, non-fused Adam). Same weights and draws; the
first step's losses are compared (the tests check the two equal in float64). ``--quick``: 1024 wide.
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
from zslfast.engine.samplers import BalancedBatches  # noqa: E402
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


def scegg_steps(device, quick=False, pool=1024):
    """SC-EGG at SUN's shapes (``quick``: C=512, R=49, 256-wide networks): the stage-3 and stage-2
    iteration of the original formulation (dense features recomputed from the region maps, the
    gradient penalty by autograd's double backward) and of zslfast's (the cache, the critic's
    closed-form input gradient), from the same weights; both share the rest of zslfast's step
    (fused Adam, one critic pass over real and fake rows), so the original side is faster than the
    released code.
    Returns ({what: (original step, cached step)}, shape string, config, noise generator)."""
    import copy

    from tests.oracles.scegg_original import RecomputedDense, original_stage2_loss
    from zslfast.config import resolve_config
    from zslfast.engine.recipe import stage_step
    from zslfast.models import scegg
    from zslfast.nn.dazle import AttributeAttentionNet, DistillationHead

    device = torch.device(device)
    cfg = resolve_config("scegg", "SUN")
    if quick:
        c, r, hidden = 512, 49, 256
        cfg["gan"]["hidden"] = hidden
    else:
        c, r, hidden = 2048, 196, cfg["gan"]["hidden"]
    a, k, s_cls, n_tr, n_all, b = 102, 717, 645, 10320, 14340, cfg["batch_size"]
    pool = min(pool, n_tr)
    g = torch.Generator().manual_seed(0)
    att = torch.nn.functional.normalize(torch.rand(k, a, generator=g), dim=1)
    net = AttributeAttentionNet(c, att, torch.randn(a, 300, generator=g), generator=g).to(device)
    torch.nn.init.normal_(net.W2, 0, 0.05, generator=g)  # non-uniform attention, as after stage 1
    for p in net.parameters():
        p.requires_grad_(False)
    maps = torch.relu(torch.randn(pool, c, r, generator=g)).to(device)
    rows = (torch.arange(n_tr) % pool).to(device)  # image i of trainval is pool image i mod P
    labels = (torch.arange(n_tr) % s_cls).to(device)
    recomputed = RecomputedDense(net, maps, rows)
    with torch.no_grad():
        dense = torch.cat([RecomputedDense(net, maps)[torch.arange(i, min(pool, i + 64), device=device)]
                           for i in range(0, pool, 64)])
        net.scaler.fit(dense)
        cache = net.scaler(dense)[rows]
        teacher = torch.cat([net(maps[i:i + 64])[0] for i in range(0, pool, 64)])[rows]
    torch.manual_seed(0)
    head = DistillationHead(c, k, cfg["stage2"]["hidden"]).to(device)
    gan = scegg.VAEGAN(c, a, hidden).to(device)
    att_d, unseen = att.to(device), torch.arange(s_cls, k, device=device)
    batches = BalancedBatches(labels, b, torch.Generator(device=device).manual_seed(1), 1)
    noise = torch.Generator(device=device).manual_seed(2)
    group = [batches.sample() for _ in range(cfg["gan"]["critic_iters"] + 1)]

    def stage3(x_all, original):
        for p in head.parameters():
            p.requires_grad_(False)
        model = scegg.SCEGGModel(net, head, copy.deepcopy(gan))
        if original:  # the released penalty: autograd's gradient with a graph, then its double backward
            model.gan.D.input_gradient = None
        step = stage_step(scegg.gan_stage(model, x_all, labels, att_d, unseen, cfg, noise,
                                          {"lambda": cfg["gan"]["lambda_gp"]}))
        return lambda: step((0, group))

    def stage2(original):
        h = copy.deepcopy(head).requires_grad_(True)
        opt = scegg.rmsprop(h.parameters(), cfg["stage2"])
        idx = group[0]

        def step():
            loss = (original_stage2_loss(net, h, maps[rows[idx]]) if original else
                    torch.nn.functional.mse_loss(h(cache[idx]), teacher[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"mse": loss.detach()}
        return step

    shape = f"B={b},C={c},R={r},A={a},K={k},S={s_cls},hidden={hidden},critic={cfg['gan']['critic_iters']},pool={pool}"
    steps = {"stage-3 iteration (5 critic steps + generator step)": (stage3(recomputed, True), stage3(cache, False)),
             "stage-2 iteration (distillation head MSE step)": (stage2(True), stage2(False))}
    return steps, shape, cfg, noise, (c, r, k, n_all)


def bench_scegg(args):
    device = torch.device(args.device)
    steps_by_what, shape, cfg, noise, (c, r, k, n_all) = scegg_steps(device, args.quick, args.pool)
    machine = timing.machine_description(device)
    print(f"machine: {machine}; zslfast backend {ops.backend(device)}; {shape}")
    full_maps = n_all * c * r * 4
    cache_bytes = n_all * (c + k) * 4
    records = []
    for what, steps in steps_by_what.items():  # (original, cached)
        first = []
        for noise_seed, fn in zip((2, 2), steps):  # the same noise stream for both first steps
            noise.manual_seed(noise_seed)
            first.append({key: float(v) for key, v in fn().items()})
        diff = max(abs(first[0][key] - first[1][key]) / max(1.0, abs(first[0][key])) for key in first[0])
        peak = [timing.peak_memory_bytes(fn, device) for fn in steps]
        reps = args.repeats
        t = timing.compare(steps, device, warmup=1, min_repeats=reps, budget_s=0.0)
        rec = {"method": "scegg", "what": what, "shape": shape, "device": args.device,
               "baseline": "original formulation (dense features recomputed from region maps per batch)",
               "baseline_ms": t[0], "ours_ms": t[1], "speedup": t[0] / t[1], "repeats": reps,
               "first_step_max_rel_loss_diff": diff, "first_step_losses": first,
               "baseline_peak_mib": peak[0] / 2 ** 20 if peak[0] is not None else None,
               "ours_peak_mib": peak[1] / 2 ** 20 if peak[1] is not None else None,
               "resident_data_mib_full_size": {"original_region_maps": full_maps / 2 ** 20,
                                               "cached_dense_and_teacher_logits": cache_bytes / 2 ** 20},
               "machine": machine, "backend": ops.backend(device)}
        records.append(rec)
        mem = "" if peak[0] is None else f"; extra peak {rec['baseline_peak_mib']:.0f} vs {rec['ours_peak_mib']:.0f} MiB"
        print(f"{what}: original {t[0]:9.1f} ms   cached {t[1]:9.1f} ms   {t[0] / t[1]:5.2f}x   "
              f"first-step losses differ by {diff:.1e} (relative){mem}")
    print(f"resident data at SUN's full size: region maps {full_maps / 2 ** 30:.1f} GiB (the original, "
          f"plus 2x at load) vs dense cache + teacher logits {cache_bytes / 2 ** 20:.0f} MiB")
    return records


def gan_steps(method, device, quick=False):
    """(released-formulation step, zslfast step, shape string) of ``method``'s GAN iteration at CUB's
    shapes, from the same weights and draws (see the module docstring)."""
    import copy

    from tests.oracles import gan_original
    from zslfast.config import resolve_config
    from zslfast.engine.recipe import Stage, stage_step
    from zslfast.engine.samplers import RandomBatches
    from zslfast.eval.classifier import SoftmaxClassifier
    from zslfast.nn import vaegan

    device = torch.device(device)
    cfg = resolve_config(method, "CUB")
    q = cfg["gan"]
    if quick:
        q["hidden"] = 1024
    n, c, a, s_cls, b = 7057, 2048, 312, 150, cfg["batch_size"]
    g = torch.Generator().manual_seed(0)
    x_all = torch.rand(n, c, generator=g).to(device)
    y_all = (torch.arange(n) % s_cls).to(device)
    att = torch.nn.functional.normalize(torch.rand(200, a, generator=g), dim=1).to(device)
    batches = [RandomBatches(n, b, torch.Generator(device=device).manual_seed(1)).sample()
               for _ in range(q["critic_iters"])]
    gens = [torch.Generator(device=device).manual_seed(2) for _ in range(2)]
    torch.manual_seed(0)
    if method == "tfvaegan":
        gan = vaegan.VAEGAN(c, a, q["hidden"]).to(device)
        released = copy.deepcopy(gan)
        state = {"lambda": q["lambda_gp"]}
        ours = stage_step(Stage("tf-vaegan", gan.networks(), vaegan.vaegan_optimizers(gan, q), None, epochs=1,
                                step=vaegan.train_step(gan, x_all, y_all, att, torch.arange(s_cls, 200, device=device),
                                                       q, gens[1], state, generator_batch="last")))
        opts, lam = gan_original.tfvaegan_optimizers(released, q), [q["lambda_gp"]]

        def original():
            out, lam[0] = gan_original.tfvaegan_iteration(released, opts, x_all, y_all, att, batches, 1, q, gens[0],
                                                           lam[0])
            return out
        step = (original, lambda: ours((1, batches)))
    else:
        from zslfast.models.clswgan import gan_step
        from zslfast.optim import adam

        G = vaegan.Generator(c, a, a, q["hidden"], output="relu").to(device)
        D = vaegan.Critic(c, a, q["hidden"]).to(device)
        clf = SoftmaxClassifier(c, s_cls, device=device, init="normal").requires_grad_(False)
        G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
        betas = (q["beta1"], 0.999)
        ours = stage_step(Stage("f-clswgan", {"G": G, "D": D}, {"G": adam(G.parameters(), device, q["lr"], betas=betas),
                                                               "D": adam(D.parameters(), device, q["lr"], betas=betas)},
                                None, step=gan_step(x_all, y_all, y_all, att, q, gens[1]), uses={"clf": clf}, epochs=1))
        opt_g, opt_d = gan_original.adam(G2.parameters(), q["lr"], q["beta1"]), gan_original.adam(D2.parameters(), q["lr"], q["beta1"])
        step = (lambda: gan_original.clswgan_iteration(G2, D2, clf, opt_g, opt_d, x_all, y_all, y_all, att, batches,
                                                       q, gens[0]),
                lambda: ours((0, batches)))
    shape = f"B={b},C={c},A={a},S={s_cls},hidden={q['hidden']},critic={q['critic_iters']},like=CUB"
    return step, shape


def bench_gan(args):
    device = torch.device(args.device)
    steps, shape = gan_steps(args.method, device, args.quick)
    machine = timing.machine_description(device)
    print(f"machine: {machine}; zslfast backend {ops.backend(device)}; {shape}")
    first = [{k: float(v) for k, v in fn().items()} for fn in steps]  # same weights and draws: compare
    diff = max(abs(first[0][k] - first[1][k]) / max(1.0, abs(first[0][k])) for k in first[0])
    peak = [timing.peak_memory_bytes(fn, device) for fn in steps]
    t = timing.compare(steps, device, warmup=1, min_repeats=args.repeats, budget_s=0.0)
    what = "GAN iteration (5 critic steps + generator step" + (", feedback pass)" if args.method == "tfvaegan" else ")")
    rec = {"method": args.method, "what": what, "shape": shape, "device": args.device,
           "baseline": "released formulation in plain PyTorch (tests/oracles/gan_original.py)",
           "baseline_ms": t[0], "ours_ms": t[1], "speedup": t[0] / t[1], "repeats": args.repeats,
           "first_step_max_rel_loss_diff": diff, "first_step_losses": first,
           "baseline_peak_mib": peak[0] / 2 ** 20 if peak[0] is not None else None,
           "ours_peak_mib": peak[1] / 2 ** 20 if peak[1] is not None else None,
           "machine": machine, "backend": ops.backend(device)}
    print(f"{what}: released {t[0]:9.1f} ms   zslfast {t[1]:9.1f} ms   {t[0] / t[1]:5.2f}x   "
          f"first-step losses differ by {diff:.1e} (relative)")
    return [rec]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=["gsmflow", "grw", "scegg", "tfvaegan", "clswgan"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=3, help="grw: timed repeats of each side (default 3; the "
                   "original formulation takes minutes per batch on a CPU)")
    p.add_argument("--pool", type=int, default=1024, help="scegg: region maps held for the original formulation "
                   "(default 1024 images, 1.6 GB at SUN's shapes)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.method == "gsmflow":
        try:
            import FrEIA  # noqa: F401
        except ImportError:
            sys.exit("bench_train: the FrEIA baseline needs `pip install freia`")
        records = bench_gsmflow(args)
    elif args.method == "grw":
        records = bench_grw(args)
    elif args.method == "scegg":
        records = bench_scegg(args)
    else:
        records = bench_gan(args)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(records, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
