import json

import pytest
import torch

from zslfast.config import resolve_config
from zslfast.data import make_synthetic
from zslfast.methods import RunContext
from zslfast.models.gsmflow import GSMFlowModel, RelativePositioning, select_anchors, synthetic_budget
from zslfast.train import main


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


def test_synthesis_shapes_and_class_conditioning():
    data = make_synthetic(seed=0)
    cfg = resolve_config("gsmflow", "synthetic")
    model = GSMFlowModel(data.feature_dim, data.attributes[:3], cfg)
    x, y = model.synthesize(data.attributes, torch.tensor([4, 9]), 10, torch.Generator().manual_seed(0), batch=4)
    assert x.shape == (20, data.feature_dim) and y.tolist() == [4] * 10 + [9] * 10


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


def test_short_training_run_is_well_above_chance(tmp_path):
    out = tmp_path / "g"
    assert main(["--method", "gsmflow", "--no-progress", "--device", "cpu", "--out", str(out), "--set", "epochs=20",
                 "--set", "eval_every_epochs=10"]) == 0
    res = json.loads((out / "results.json").read_text())
    m = res["metrics"]
    # chance: T1 10% (10 unseen classes); GZSL U and S about 2% (50 classes)
    assert m["zsl_t1"] > 25 and m["gzsl_h"] > 20, m
    # the final classifiers train for the epoch counts chosen on validation at the chosen flow epoch
    sel = res["selection"]
    chosen = dict((e, used) for e, used in sel["classifier_history"])
    assert sel["classifier_epochs"] == chosen[sel["epoch"]]
    assert all(1 <= n <= res["config"]["classifier"]["epochs"] for n in sel["classifier_epochs"].values())
    assert res["info"]["synthetic"]["ratio"] == pytest.approx(
        res["info"]["synthetic"]["per_unseen_class"] / res["info"]["synthetic"]["real_per_seen_class"], rel=1e-3)
