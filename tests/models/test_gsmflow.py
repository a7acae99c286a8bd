import math

import pytest
import torch

from tests.quick_runs import quick_run
from zslfast.config import resolve_config
from zslfast.data import make_synthetic
from zslfast.engine import RunContext
from zslfast.eval.generative import synthetic_budget as _budget
from zslfast.models.gsmflow import GSMFlow, GSMFlowModel, RelativePositioning, build_model, select_anchors


def synthetic_budget(data, cfg):
    return _budget(data, cfg["synth_per_class"], cfg["synth_ratio"])


def _classifier_epochs(sel):
    return {k: sel["choices"][f"{k}_classifier_epochs"]["value"] for k in ("gzsl", "zsl")}


def test_anchor_selection_by_hand():
    # Rows 0 and 1 are parallel, 2 is at 45° to them, 3 orthogonal to 0/1: cosine row sums
    # (self included) 0: 1+1+.707+0 = 2.707, 1: 2.707, 2: .707+.707+1+.707 = 3.121, 3: 0+0+.707+1 = 1.707
    att = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    lo, hi, med = select_anchors(att)
    assert (lo, hi) == (3, 2)
    assert med == 0  # sorted sums [1.707, 2.707, 2.707, 3.121]: position 2 is the tie 2.707, first class 0


def test_relative_positioning_is_the_three_branch_formula():
    torch.manual_seed(0)
    anchors = torch.randn(3, 5)
    rp = RelativePositioning(anchors, 7)
    a = torch.randn(4, 5)
    expected = sum(torch.relu(br(a - v)) for br, v in zip(rp.branches, anchors))
    torch.testing.assert_close(rp(a), expected)


def _far_from_identity_model(data):
    """A small GSMFlow whose flow is far from the identity (init_std 0.1 instead of 0.01), so that
    f, f⁻¹ and f∘f are clearly different maps and a dropped ``rev`` cannot pass unnoticed."""
    cfg = resolve_config("gsmflow", "synthetic", overrides=["flow.hidden=64", "flow.cond_dim=16", "flow.init_std=0.1"])
    torch.manual_seed(0)
    return GSMFlowModel(data.feature_dim, data.attributes[:3], cfg).double().eval()


def test_synthesis_inverts_the_flow_under_its_own_class_condition():
    data = make_synthetic(seed=0)
    att = data.attributes.double()
    model = _far_from_identity_model(data)
    n, classes = 6, torch.tensor([4, 9])
    x, y = model.synthesize(att, classes, n, torch.Generator().manual_seed(5), batch=4)
    assert x.shape == (12, data.feature_dim) and y.tolist() == [4] * 6 + [9] * 6
    # the same generator replays the latent draws: per class, batches of 4 then 2
    g = torch.Generator().manual_seed(5)
    z = torch.cat([torch.randn(k, data.feature_dim, generator=g) for _ in classes for k in (4, 2)]).double()
    with torch.no_grad():
        cond = model.sr(att[y])
        z_back, _ = model.flow(x, cond)
        torch.testing.assert_close(z_back, z, rtol=1e-9, atol=1e-9)  # f(x; sr(a_y)) = z: x = f⁻¹(z; sr(a_y))
        assert (model.flow(z, cond)[0] - x).abs().max() > 0.1          # forward instead of inverse differs
        # the class matters: under the other class's condition x does not map back to z, and the
        # same latent draws give other features for another class
        swapped = model.sr(att[torch.where(y == 4, 9, 4)])
        assert (model.flow(x, swapped)[0] - z).abs().max() > 0.1
    x_other, _ = model.synthesize(att, torch.tensor([9, 4]), n, torch.Generator().manual_seed(5), batch=4)
    assert (x_other[:6] - x[:6]).abs().max() > 0.1


def test_prototypes_are_the_inverse_flow_of_the_latent_origin():
    data = make_synthetic(seed=0)
    att = data.attributes.double()
    model = _far_from_identity_model(data)
    protos = model.prototypes(att[:5])
    with torch.no_grad():
        z, _ = model.flow(protos, model.sr(att[:5]))
    torch.testing.assert_close(z, torch.zeros_like(z), rtol=0, atol=1e-9)
    assert protos.abs().max() > 0.1  # not trivially the origin itself
    # the prototype loss trains the flow, not sr (held fixed as in the original)
    protos.square().sum().backward()
    assert all(p.grad is None for p in model.sr.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.flow.parameters())


def test_nll_is_the_per_dimension_negative_log_likelihood():
    """nll = mean(z²)/2 − mean(log|det J|)/D: checked against the density of the flow computed
    independently, log p(x) = log N(f(x); 0, I) + log|det ∂f/∂x| with the Jacobian by autograd."""
    torch.manual_seed(0)
    cfg = resolve_config("gsmflow", "synthetic", overrides=["flow.hidden=8", "flow.cond_dim=4", "flow.init_std=0.3"])
    att = torch.randn(3, 5, dtype=torch.float64)
    model = GSMFlowModel(6, att, cfg).double()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([2, 0, 2, 1])
    log_p = []
    for xi, yi in zip(x, y):
        cond = model.sr(att[yi:yi + 1])
        f = lambda v: model.flow(v[None], cond)[0][0]
        z = f(xi)
        jac = torch.autograd.functional.jacobian(f, xi)
        log_p.append(-0.5 * (z ** 2).sum() - 3 * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1])
    expected = -torch.stack(log_p).mean() / 6 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(model.nll(x, y, att), expected, rtol=1e-10, atol=1e-10)


def test_synthetic_budget_follows_the_data():
    data = make_synthetic(seed=0)  # 1920 trainval features of 40 seen classes: 48 per class
    cfg = resolve_config("gsmflow", "synthetic", overrides=["synth_ratio=2.5"])
    n, record = synthetic_budget(data, cfg)
    assert n == 120 and record == {"per_unseen_class": 120, "real_per_seen_class": 48.0, "ratio": 2.5}
    cfg = resolve_config("gsmflow", "synthetic", overrides=["synth_ratio=null", "synth_per_class=30"])
    assert synthetic_budget(data, cfg) == (30, {"per_unseen_class": 30, "real_per_seen_class": 48.0, "ratio": 0.625})
    val = data.validation_split()  # fewer seen classes and samples: the ratio, not the count, carries over
    n_val, rec_val = synthetic_budget(val, resolve_config("gsmflow", "synthetic", overrides=["synth_ratio=2.5"]))
    assert rec_val["ratio"] == pytest.approx(2.5, abs=0.02) and n_val == round(2.5 * rec_val["real_per_seen_class"])


def _reload(res, ckpt, data):
    """The checkpointed flow of a run on ``data`` (already normalised as the run normalised it)."""
    model = build_model(data, res["config"], torch.device("cpu"))
    model.load_state_dict(ckpt["state"])
    return model.eval()


def test_checkpoint_reproduces_the_metrics_and_beats_the_untrained_flow(tmp_path_factory):
    """The saved flow, with the classifier epochs recorded in results.json, gives exactly the
    reported metrics; the same evaluation of the untrained flow (same seed, 0 epochs) is far worse,
    and training lowered the flow's NLL on the training features."""
    res, ckpt = quick_run(tmp_path_factory, "gsmflow")
    cfg = res["config"]
    data = make_synthetic(seed=0).normalized(cfg["feature_norm"])
    ctx = RunContext(device=torch.device("cpu"), seed=res["seed"], progress=False)
    trained = _reload(res, ckpt, data)
    used = _classifier_epochs(res["selection"])
    metrics, _ = GSMFlow().evaluate(trained, data, cfg, ctx, classifier_epochs=used)
    assert metrics == pytest.approx(res["metrics"], abs=1e-9)
    with ctx.init_scope():
        untrained = build_model(data, cfg, torch.device("cpu")).eval()
    m0, _ = GSMFlow().evaluate(untrained, data, cfg, ctx, classifier_epochs=used)
    # margins about half of the quick run's gains (T1 39.7 vs 7.7, H 40.2 vs 0 untrained)
    assert metrics["zsl_t1"] > m0["zsl_t1"] + 15 and metrics["gzsl_h"] > m0["gzsl_h"] + 20, (metrics, m0)
    x, y = data.subset("trainval")
    with torch.no_grad():
        assert trained.nll(x, y, data.attributes) < untrained.nll(x, y, data.attributes) - 0.1


def test_select_on_test_keeps_the_best_test_epoch_and_its_weights(tmp_path_factory):
    """The original protocol: the chosen flow epoch is the argmax of the recorded per-evaluation
    test H, the reported metrics are that evaluation's, and the checkpoint holds that epoch's flow
    (re-evaluating it the same way, with the same evaluation key, gives the same numbers)."""
    res, ckpt = quick_run(tmp_path_factory, "gsmflow", "--select-on-test", "--set", "eval_every=2",
                          tag="on_test")
    sel, m = res["selection"], res["metrics"]
    assert sel["on"] == "test"
    flow = sel["choices"]["flow_epochs"]
    epochs = [e for e, _ in flow["history"]]
    assert epochs == list(range(res["config"]["eval_start"], res["config"]["epochs"] + 1, 2))
    scores = [h for _, h in flow["history"]]
    assert flow["value"] == epochs[scores.index(max(scores))] and m["gzsl_h"] == max(scores)
    assert len(set(scores)) > 1  # the evaluations differ, so keeping the wrong one would show
    data = make_synthetic(seed=0).normalized(res["config"]["feature_norm"])
    ctx = RunContext(device=torch.device("cpu"), seed=res["seed"], progress=False)
    with ctx.evaluation(f"gsmflow/epoch {flow['value']}"):  # that evaluation's own synthesis stream
        again, nested = GSMFlow().evaluate(_reload(res, ckpt, data), data, res["config"], ctx)
    assert again == pytest.approx(m, abs=1e-9)
    assert {k: c["value"] for k, c in nested.items()} == {f"{k}_classifier_epochs": v
                                                          for k, v in _classifier_epochs(sel).items()}


def test_selection_records_the_classifier_epochs_and_the_synthetic_ratio(tmp_path_factory):
    res, _ = quick_run(tmp_path_factory, "gsmflow")
    sel = res["selection"]
    n_epochs = res["config"]["classifier"]["epochs"]
    for kind in ("gzsl", "zsl"):  # each the argmax of its own per-epoch validation history
        choice = sel["choices"][f"{kind}_classifier_epochs"]
        assert [e for e, _ in choice["history"]] == list(range(1, n_epochs + 1))
        scores = [s for _, s in choice["history"]]
        assert choice["value"] == 1 + scores.index(max(scores)) and choice["score"] == max(scores)
    assert res["info"]["synthetic"]["ratio"] == pytest.approx(
        res["info"]["synthetic"]["per_unseen_class"] / res["info"]["synthetic"]["real_per_seen_class"], rel=1e-3)


def test_select_on_test_keeps_the_best_evaluation_not_the_last(monkeypatch):
    """With the evaluation replaced by a scripted H sequence (best in the middle), the run reports
    the middle evaluation's metrics and checkpoints the flow as it was at that evaluation."""
    from zslfast.models import gsmflow

    script, seen = iter([10.0, 30.0, 20.0, 30.0]), []  # the 4th: the export's replay of the chosen one

    def scripted(self, model, data, cfg, ctx, classifier_epochs=None, keep=None):
        h = next(script)
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"zsl_t1": h, "gzsl_s": h, "gzsl_u": h, "gzsl_h": h}, {
            f"{k}_classifier_epochs": {"value": len(seen), "score": h, "history": []} for k in ("gzsl", "zsl")}

    monkeypatch.setattr(gsmflow.GSMFlow, "evaluate", scripted)
    cfg = resolve_config("gsmflow", "synthetic", quick=True,
                         overrides=["epochs=3", "eval_start=1", "eval_every=1"])
    ctx = RunContext(device=torch.device("cpu"), selection="test", progress=False)
    result = gsmflow.GSMFlow().run(make_synthetic(seed=0), cfg, ctx)
    assert result.selection["choices"]["flow_epochs"]["value"] == 2 and result.metrics["gzsl_h"] == 30.0
    assert _classifier_epochs(result.selection) == {"gzsl": 2, "zsl": 2}
    assert all(torch.equal(result.state[k], seen[1][k]) for k in seen[1])
    assert any(not torch.equal(seen[2][k], seen[1][k]) for k in seen[1])  # the last epoch's flow differs
    assert len(seen) == 4 and all(torch.equal(seen[3][k], seen[1][k]) for k in seen[1])  # replayed: the kept flow
