"""SC-EGG (zslfast/models/scegg.py): the cached pipeline equals the original's recomputed
formulation, the unseen-class terms are there, every stage learns, ``--select-on-test`` reports best
H and best T1 independently, and region data loads from an HDF5 file through the CLI.

The stage-1 localisation test (attention mass on planted regions ≥ 3× uniform after a short run)
is tests/nn/test_dazle.py; the weighted L1 and the gradient penalty against hand-computed values
are tests/nn/test_vaegan.py; the float64 stage-2 cached ≡ recomputed test is test_dazle.py too."""
import copy

import pytest
import torch

from tests.oracles.scegg_original import RecomputedDense
from tests.quick_runs import quick_run
from zslfast.config import resolve_config
from zslfast.data.synthetic_regions import make_synthetic_regions
from zslfast.engine import RunContext
from zslfast.engine.recipe import run_stage, stage_step
from zslfast.engine.samplers import BalancedBatches
from zslfast.models import scegg
from zslfast.nn.dazle import AttributeAttentionNet, DistillationHead, dense_pass

SMALL = dict(seed=0, num_classes=12, num_unseen=3, attribute_dim=16, images_per_class=10, channels=32, grid=(4, 4))


def _config(**gan):
    cfg = resolve_config("scegg", "synthetic", quick=True)
    cfg["batch_size"] = 16
    cfg["gan"].update(hidden=48, **gan)
    return cfg


def _stage3_setup(cfg, dtype=torch.float64):
    """A frozen stage-1 net with non-uniform attention, its scaled dense cache, a frozen head and
    an untrained VAEGAN, all in ``dtype``."""
    data = make_synthetic_regions(**SMALL)
    g = torch.Generator().manual_seed(0)
    net = AttributeAttentionNet(32, data.attributes, data.w2v, generator=g).to(dtype)
    torch.nn.init.normal_(net.W2, 0, 0.3, generator=g)  # non-uniform attention, as after stage 1
    maps = data.features.read().to(dtype)
    tv = data.splits["trainval"]
    with torch.no_grad():
        dense = dense_pass(net, _Whole(maps))[0]  # the method's cache pass
        net.scaler.fit(dense[tv])
        cache = net.scaler(dense)
    torch.manual_seed(0)
    head = DistillationHead(32, data.num_classes, 24).to(dtype)
    for p in [*net.parameters(), *head.parameters()]:
        p.requires_grad_(False)
    gan = scegg.VAEGAN(32, data.attribute_dim, cfg["gan"]["hidden"]).to(dtype)
    att = scegg.class_attributes(data, cfg).to(dtype)
    return data, net, maps, cache, head, gan, att


class _Whole:
    """Region maps already in memory (any dtype), in the block interface of RegionFeatures."""

    def __init__(self, maps):
        self.maps = maps

    def blocks(self, block):
        for start in range(0, self.maps.shape[0], block):
            yield None, self.maps[start:start + block]


def _run_steps(model, x_all, data, att, cfg, steps=3, loop=0):
    """``steps`` stage-3 iterations with fixed streams; returns the per-step losses."""
    tv = data.splits["trainval"]
    y = data.labels[tv]
    g = torch.Generator().manual_seed(1)
    batches = BalancedBatches(y, cfg["batch_size"], torch.Generator().manual_seed(2), 1)
    step = stage_step(scegg.gan_stage(model, x_all, y, att, data.unseen_classes, cfg, g,
                                      {"lambda": cfg["gan"]["lambda_gp"]}))
    return [{k: float(v) for k, v in step((loop, [batches.sample() for _ in range(cfg["gan"]["critic_iters"] + 1)])).items()}
            for _ in range(steps)]


@pytest.mark.parametrize("a1", [0.0, 0.5])
def test_cached_stage3_equals_the_original_recomputed_formulation(a1):
    """float64: three stage-3 iterations on the cache and on dense features recomputed from the
    region maps for every batch (the original) give the same losses and the same weights of all
    five networks, with and without the feedback pass."""
    cfg = _config(a1=a1)
    data, net, maps, cache, head, gan, att = _stage3_setup(cfg)
    tv = data.splits["trainval"]
    models = [scegg.SCEGGModel(net, head, copy.deepcopy(gan)) for _ in range(2)]
    cached = _run_steps(models[0], cache[tv], data, att, cfg, loop=1)
    recomputed = _run_steps(models[1], RecomputedDense(net, maps, rows=tv), data, att, cfg, loop=1)
    for a, b in zip(cached, recomputed):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-9 * max(1.0, abs(a[k])) for k in a), (a, b)
    for (name, p), q in zip(models[0].gan.named_parameters(), models[1].gan.parameters()):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-11), name
    moved = [not torch.equal(p, q) for p, q in zip(models[0].gan.Fb.parameters(), gan.Fb.parameters())]
    assert all(moved) if a1 else not any(moved)  # Fb trains only through a non-zero feedback


def test_the_unseen_class_terms_are_present(monkeypatch):
    """The generator's CE covers generated unseen-class features with unseen labels (weight 0.001),
    and the stage-2 targets include the unseen classes' columns (teacher scores from attributes)."""
    cfg = _config()
    data, net, maps, cache, head, gan, att = _stage3_setup(cfg, torch.float32)
    targets = []
    original = scegg.F.cross_entropy

    def recording(logits, target, *a, **k):
        targets.append(target.clone())
        return original(logits, target, *a, **k)

    monkeypatch.setattr(scegg.F, "cross_entropy", recording)
    tv = data.splits["trainval"]
    losses = _run_steps(scegg.SCEGGModel(net, head, gan), cache[tv], data, att, cfg, steps=1)[0]
    seen, unseen = data.seen_classes, data.unseen_classes
    assert len(targets) == 2 and torch.isin(targets[0], seen).all() and torch.isin(targets[1], unseen).all()
    assert "cls_unseen" in losses and losses["cls_unseen"] > 0
    targets.clear()
    _run_steps(scegg.SCEGGModel(net, head, copy.deepcopy(gan)), cache[tv], data, att,
               _config(unseen_cls_weight=0.0), steps=1)
    assert len(targets) == 1  # weight 0: the term is not computed at all
    monkeypatch.setattr(scegg.F, "cross_entropy", original)

    # Stage 2: the loss is the MSE over all K columns, unseen ones included: the first step's loss
    # equals the hand-computed MSE of the initial head on the first balanced batch, with the
    # teacher's logits as they are and with only the unseen columns shifted.
    with torch.no_grad():
        logits = net(maps)[0]
    ctx = RunContext(progress=False)
    dense = scegg.ZSLDataset(name="d", features=cache, labels=data.labels, attributes=data.attributes,
                             class_names=data.class_names, splits=data.splits)
    cfg["stage2"]["iterations"] = 1
    shifted = logits.clone()
    shifted[:, unseen] -= 1.0
    idx = BalancedBatches(data.labels[tv], cfg["batch_size"], ctx.rng("stage2_batches"), 1).sample()
    with ctx.init_scope():
        head0 = DistillationHead(32, data.num_classes, cfg["stage2"]["hidden"])
    with torch.no_grad():
        out = head0(cache[tv][idx])
    for target in (logits, shifted):
        hist = run_stage(scegg.head_stage(dense, target, cfg, ctx)[1], ctx)
        expected = float(((out - target[tv][idx]) ** 2).mean())
        assert abs(hist.records[0]["loss"]["loss"] - expected) < 1e-5 * expected


def test_every_stage_learns_in_a_quick_run(tmp_path_factory):
    """The quick run's histories: stage 1's and stage 2's losses fall between their first and last
    100-iteration chunks, stage 3's VAE loss between its first and last epoch; and the run reports
    the stages' timings and the GP weight it ended with."""
    res, ckpt = quick_run(tmp_path_factory, "scegg")
    h = res["history"]
    for stage in ("stage 1", "stage 2"):
        assert len(h[stage]) >= 2 and h[stage][-1]["loss"]["loss"] < 0.5 * h[stage][0]["loss"]["loss"], h[stage]
    assert h["stage 3"][-1]["loss"]["vae"] < h["stage 3"][0]["loss"]["vae"], h["stage 3"]
    assert {"stage1_s", "dense_s", "stage2_s", "stage3_s"} <= set(res["timings"])
    assert res["info"]["gp_lambda_final"] > 0 and res["info"]["not_released"] == []
    assert {k.split(".")[0] for k in ckpt["state"]} == {"net", "head", "gan"}


def test_select_on_test_reports_best_h_and_best_t1_independently(tmp_path_factory):
    """The original protocol: evaluated on the test set after every GAN epoch; H (with its S and U)
    is the best H over epochs, T1 the best T1, each picked on its own."""
    res, _ = quick_run(tmp_path_factory, "scegg", "--select-on-test")
    choices, m = res["selection"]["choices"], res["metrics"]
    assert res["selection"]["on"] == "test"
    epochs = resolve_config("scegg", "synthetic", quick=True)["epochs"]
    h_hist, t_hist = choices["gan_epochs"]["history"], choices["gan_epochs[zsl]"]["history"]
    assert [e for e, _ in h_hist] == list(range(1, epochs + 1)) == [e for e, _ in t_hist]
    assert m["gzsl_h"] == max(s for _, s in h_hist) and m["zsl_t1"] == max(s for _, s in t_hist)
    assert choices["gan_epochs"]["value"] == max(h_hist, key=lambda r: r[1])[0]


def test_region_hdf5_through_the_cli(tmp_path):
    """A region-feature file under --data-root runs end to end, with the dataset's not-released
    values reported; a missing file is one clear error."""
    import json

    pytest.importorskip("h5py")
    from zslfast.data.regions import region_file, write_region_dataset
    from zslfast.train import main

    data = make_synthetic_regions(**SMALL)
    write_region_dataset(data, region_file(str(tmp_path), "CUB"), grid=(4, 4))
    out = tmp_path / "run"
    args = ["--method", "scegg", "--dataset", "CUB", "--data-root", str(tmp_path), "--quick", "--device", "cpu",
            "--no-progress", "--out", str(out), "--set", "epochs=1", "--set", "eval_start=1",
            "--set", "stage1.iterations=20", "--set", "stage2.iterations=20", "--set", "synth_per_class=20"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert "gan.gamma_d" in res["info"]["not_released"] and res["config"]["gan"]["gamma_d"] == 10.0
    assert res["embedding"] == "att+w2v" and res["deviations"] == []  # the file's own word vectors
    # random word vectors (DAZLE's fallback) carry no semantics: the run says att, and records why
    assert main([*args, "--set", "w2v=random", "--overwrite"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["embedding"] == "att" and res["deviations"] == ["no word vectors: random V"]
    assert main([*args[:4], "--data-root", str(tmp_path / "nowhere"), *args[6:]]) == 2


def test_pooled_regions_baseline_through_the_cli(tmp_path):
    """``--pooled-regions`` runs a feature-vector method on the globally average-pooled region maps
    of the same images (the README's ESZSL baseline); a region method refuses it."""
    import json

    from zslfast.train import main

    out = tmp_path / "eszsl"
    assert main(["--method", "eszsl", "--pooled-regions", "--quick", "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    data = make_synthetic_regions(seed=0)
    assert res["dataset"] == "synthetic_regions" and res["variant"] == "pooled-regions quick" and f"{data.features.shape[1]}-d features" in res["data"]
    assert main(["--method", "scegg", "--pooled-regions", "--quick", "--no-progress", "--out", str(out)]) == 2


def test_pooled_features_are_the_region_mean():
    data = make_synthetic_regions(**SMALL)
    pooled = data.pooled(block=7)
    assert torch.allclose(pooled.features, data.features.read().mean(2)) and pooled.splits.keys() == data.splits.keys()


def _model_from_state(data, cfg, state, ctx):
    """A :class:`SCEGGModel` for ``data`` with the weights of a checkpoint's ``state`` (the three
    stages' networks and the scaler), its dense cache recomputed from ``data``'s region maps."""
    data = scegg.with_clipped_attributes(data, cfg)
    with ctx.init_scope():
        net = AttributeAttentionNet(data.features.shape[1], data.attributes, data.w2v)
        head = DistillationHead(data.features.shape[1], data.num_classes, cfg["stage2"]["hidden"])
        gan = scegg.VAEGAN(data.features.shape[1], data.attribute_dim, cfg["gan"]["hidden"])
    model = scegg.SCEGGModel(net, head, gan).to(ctx.device)
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    g, _ = dense_pass(net, data.features.to(ctx.device), cfg["dense_block"])
    model.dense = scegg.ZSLDataset(name=f"{data.name}[dense]", features=net.scaler(g).contiguous(), labels=data.labels,
                                   attributes=data.attributes, class_names=data.class_names, splits=data.splits,
                                   source=data.source, info=dict(data.info))
    return model


def test_checkpoint_reproduces_the_metrics_and_beats_the_untrained_generator(tmp_path_factory):
    """The saved networks, with the classifier epochs recorded in results.json, give exactly the
    reported metrics; the same trained stages 1-2 with an untrained VAEGAN (same seed) are far worse."""
    res, ckpt = quick_run(tmp_path_factory, "scegg")
    cfg, sel = res["config"], res["selection"]["choices"]
    data = make_synthetic_regions(seed=0)
    ctx = RunContext(seed=res["seed"], progress=False)
    model = _model_from_state(data, cfg, ckpt["state"], ctx)
    used = {k: sel[f"{k}_classifier_epochs"]["value"] for k in ("gzsl", "zsl")}
    metrics, _ = scegg.SCEGG().evaluate(model, None, cfg, ctx, used)
    assert metrics == pytest.approx(res["metrics"], abs=1e-9)
    with ctx.init_scope():
        model.gan = scegg.VAEGAN(data.features.shape[1], data.attribute_dim, cfg["gan"]["hidden"]).eval()
    m0, _ = scegg.SCEGG().evaluate(model, None, cfg, ctx, used)
    # margins about half of the quick run's gains (T1 46.7 vs 2.5, H 70.6 vs 18.2 untrained)
    assert metrics["zsl_t1"] > m0["zsl_t1"] + 20 and metrics["gzsl_h"] > m0["gzsl_h"] + 25, (metrics, m0)


def _generator_step_inputs(model, cache, data, att, cfg):
    """The inputs of the last D call and the last Dec call of one stage-3 iteration: those of the
    generator step's adversarial and weighted-L1 terms."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, key=key: seen.__setitem__(key, args[0].detach().clone()))
             for key, m in (("D", model.gan.D), ("Dec", model.gan.Dec))]
    _run_steps(model, cache[data.splits["trainval"]], data, att, cfg, steps=1)
    for h in hooks:
        h.remove()
    return seen["D"], seen["Dec"]


@pytest.mark.parametrize("encoded", [True, False])
def test_encoded_noise_off_feeds_a_separate_generation_to_d_and_dec(encoded):
    """``gan.encoded_noise: false`` (the original's else-branch): the generator step's adversarial
    term and decoder loss see G(ε, a) for fresh noise ε, not the VAE reconstruction, so they do not
    depend on the encoder at all; with it true (released) they see the reconstruction, which does.
    Shown by scaling the encoder's output layers: the D and Dec inputs of the generator step stay
    bit-identical exactly when the option is off."""
    cfg = _config(encoded_noise=encoded)
    data, net, maps, cache, head, gan, att = _stage3_setup(cfg, torch.float32)
    inputs = []
    for scale in (1.0, 3.0):
        model = scegg.SCEGGModel(net, head, copy.deepcopy(gan))
        with torch.no_grad():
            for p in model.gan.E.parameters():
                p.mul_(scale)
        inputs.append(_generator_step_inputs(model, cache, data, att, cfg))
    (d1, dec1), (d2, dec2) = inputs
    same = torch.equal(d1, d2) and torch.equal(dec1, dec2)
    assert same != encoded, "generator-step fake depends on the encoder" if not encoded else "encoder ignored"


def test_clip_negative_att_reaches_every_stage():
    """``clip_negative_att`` (the original's AWA2 loader clips ``att`` once): a run on data with
    negative attribute entries builds stage 1's class attributes (and so the teacher logits the
    stage-2 head fits) and the GAN's from the clipped matrix."""
    data = make_synthetic_regions(**SMALL)
    att = data.attributes.clone()
    att[0, :3] = -0.05  # three negative entries, as AWA2's att has four
    data = scegg.replace(data, attributes=att)
    cfg = _config()
    cfg.update(clip_negative_att=True, epochs=1, eval_start=1, synth_per_class=5, synth_ratio=None)
    cfg["stage1"]["iterations"] = cfg["stage2"]["iterations"] = 2
    cfg["classifier"]["epochs"] = 1
    result = scegg.SCEGG().run(data, cfg, RunContext(progress=False, selection="test"))
    class_att = result.state["net.class_att"]
    assert (class_att >= 0).all()
    assert torch.allclose(class_att, torch.nn.functional.normalize(att.clamp_min(0), dim=1))
    assert (scegg.class_attributes(scegg.with_clipped_attributes(data, cfg), cfg) >= 0).all()
    cfg["clip_negative_att"] = False
    assert (scegg.class_attributes(scegg.with_clipped_attributes(data, cfg), cfg) < 0).any()
