"""Plots: every kind is drawn from a real quick run, decodes as a PNG of the expected size, and
shows what the data holds (point counts per kind, panels, planted footprints)."""
import json
import shutil

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from matplotlib.image import imread  # noqa: E402

from tests.quick_runs import quick_run_folder  # noqa: E402
from zslfast import plot  # noqa: E402
from zslfast.data.synthetic_regions import make_synthetic_regions  # noqa: E402
from zslfast.train import main as train_main  # noqa: E402


def _png_size(path):
    img = imread(str(path))
    return img.shape[1], img.shape[0]


@pytest.fixture(scope="module")
def scegg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots") / "scegg"
    assert train_main(["--method", "scegg", "--quick", "--device", "cpu", "--no-progress", "--plots",
                       "--out", str(out)]) == 0
    return out


def test_plots_change_no_result(scegg_run, tmp_path_factory):
    plain = quick_run_folder(tmp_path_factory, "scegg")
    assert json.loads((scegg_run / "results.json").read_text())["metrics"] == \
        json.loads((plain / "results.json").read_text())["metrics"]
    assert not (plain / "features.pt").exists()  # nothing extra is saved by default


def test_tsne_shows_every_saved_point_of_each_kind(scegg_run):
    assert _png_size(scegg_run / "plots" / "tsne.png") == (7 * plot.DPI, 6 * plot.DPI)
    res, art = plot.load_run(str(scegg_run))
    data = make_synthetic_regions()
    per_class = lambda split: sum(min(50, int((data.labels[data.splits[split]] == c).sum()))  # noqa: E731
                                  for c in torch.unique(data.labels[data.splits[split]]))
    n_syn = res["info"]["synthetic"]["per_unseen_class"]
    feats = art["features"]
    assert feats["real_seen"]["y"].numel() == per_class("test_seen")
    assert feats["real_unseen"]["y"].numel() == per_class("test_unseen")
    assert set(feats["synthetic_unseen"]["y"].tolist()) == set(data.unseen_classes.tolist())
    assert feats["synthetic_unseen"]["y"].numel() == 10 * min(50, n_syn)
    sub = plot.plot_tsne(res, art, str(scegg_run / "sub.png"), max_points=300)
    assert 290 <= sum(sub.values()) <= 310 and all(v > 0 for v in sub.values())
    # the features are the generator's space (SC-EGG: the dense feature, C = 256)
    assert feats["real_seen"]["x"].shape[1] == data.features.shape[1]


@pytest.mark.slow
def test_tsne_draws_every_saved_point(tmp_path):
    # a saved set of the size SC-EGG's quick run writes (480 seen, 500 unseen, 500 synthetic, 256-d);
    # the default tier checks a real run's file, so the slow tier need not train one again
    g = torch.Generator().manual_seed(0)
    art = {"features": {k: {"x": torch.randn(n, 256, generator=g), "y": torch.arange(n) % c}
                        for k, n, c in (("real_seen", 480, 40), ("real_unseen", 500, 10),
                                        ("synthetic_unseen", 500, 10))}}
    res = {"method": "scegg", "dataset": "synthetic_regions"}
    drawn = plot.plot_tsne(res, art, str(tmp_path / "all.png"), max_points=10 ** 6)
    assert drawn == {k: v["y"].numel() for k, v in art["features"].items()}


def test_curves_have_one_panel_per_stage_and_mark_the_chosen_epoch(scegg_run):
    res, _ = plot.load_run(str(scegg_run))
    path, drawn = plot.plot("curves", str(scegg_run))
    assert drawn["stages"] == list(res["history"]) and drawn["panels"] == 6
    assert drawn["chosen_marked"] == 1  # the validation run of stage 3 chose the GAN epoch count
    assert _png_size(path) == (int(4.2 * 3 * plot.DPI), int(2.8 * 2 * plot.DPI))


def test_attention_panels_and_footprints_match_the_data(scegg_run):
    res, art = plot.load_run(str(scegg_run))
    a = art["attention"]
    path, drawn = plot.plot("attention", str(scegg_run))
    assert drawn["panels"] == a["maps"].shape[0] * a["maps"].shape[1] == 12
    fp = a["footprints"]
    assert drawn["footprints"] == int((fp["region"] >= 0).sum() + (fp["neighbour"] >= 0).sum())
    data = make_synthetic_regions()
    for i, img in enumerate(a["images"].tolist()):  # the overlay is the data's planted footprint
        assert torch.equal(fp["region"][i], data.footprints["region"][img, a["attributes"][i]].long())
    assert (fp["region"] >= 0).all()  # only planted attributes are shown
    # what the plot shows: attention concentrated on the planted region, far above uniform (1/R)
    mass = a["maps"].gather(2, fp["region"].unsqueeze(2)).mean()
    assert mass > 3 / a["maps"].shape[2]
    assert _png_size(path) == (int(2.2 * 3 * plot.DPI), int(2.2 * 4 * plot.DPI))


def test_tasks_plot_and_cli_errors(tmp_path, tmp_path_factory, capsys):
    out = tmp_path / "grw"
    shutil.copytree(quick_run_folder(tmp_path_factory, "grw"), out)  # plots are written beside the run
    assert plot.main(["tasks", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    _, drawn = plot.plot("tasks", str(out))
    assert drawn == {"tasks": len(res["per_task"])}
    assert _png_size(out / "plots" / "tasks.png") == (int(5.5 * plot.DPI), int(3.5 * plot.DPI))
    capsys.readouterr()
    assert plot.main(["tsne", str(out)]) == 2  # GRW saves no features
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--save-features" in err[0]


def test_gsmflow_saves_features_for_tsne(tmp_path):
    out = tmp_path / "gsm"
    assert train_main(["--method", "gsmflow", "--quick", "--set", "epochs=2", "--set", "eval_start=1", "--set",
                       "eval_every=1", "--device", "cpu", "--no-progress", "--save-features", "--out", str(out)]) == 0
    res, art = plot.load_run(str(out))
    assert plot.applicable(res, art) == ["curves", "seen-unseen", "tsne"]
    _, drawn = plot.plot("tsne", str(out))
    assert set(drawn) == {"real_seen", "real_unseen", "synthetic_unseen"} and all(v > 0 for v in drawn.values())


def test_paper_formats_resolution_integer_epochs_and_a_class_subset(tmp_path, tmp_path_factory, capsys):
    out = tmp_path / "grw"
    shutil.copytree(quick_run_folder(tmp_path_factory, "grw"), out)
    for ext, magic in (("pdf", b"%PDF"), ("svg", b"<?xml")):  # the extension picks the format
        assert plot.main(["tasks", str(out), "--out", str(tmp_path / f"t.{ext}")]) == 0
        assert (tmp_path / f"t.{ext}").read_bytes()[:len(magic)] == magic
    assert plot.main(["tasks", str(out), "--out", str(tmp_path / "t.png"), "--dpi", "50"]) == 0
    assert _png_size(tmp_path / "t.png") == (int(5.5 * 50), int(3.5 * 50))
    capsys.readouterr()
    assert plot.main(["tasks", str(out), "--out", str(tmp_path / "t.jpg")]) == 2
    assert "use .png, .pdf or .svg" in capsys.readouterr().err
    _, drawn = plot.plot("curves", str(out))
    assert drawn["xticks"] and all(t == int(t) for t in drawn["xticks"])  # GRW: 2 epochs per task, no 0.5 ticks
    # t-SNE of a subset of classes: every saved point of exactly those classes
    art = {"features": {k: {"x": torch.randn(60, 8), "y": torch.arange(60) % 12}
                        for k in ("real_seen", "real_unseen", "synthetic_unseen")}}
    res = json.loads((out / "results.json").read_text())
    drawn = plot.plot_tsne(res, art, str(tmp_path / "sub.svg"), max_points=10 ** 6, classes=4)
    assert drawn == {"real_seen": 20, "real_unseen": 20, "synthetic_unseen": 20}


def test_seen_unseen_curves_of_several_runs(tmp_path, tmp_path_factory, capsys):
    runs = [quick_run_folder(tmp_path_factory, m) for m in ("eszsl", "gsmflow")]
    results = [json.loads((r / "results.json").read_text()) for r in runs]
    path = tmp_path / "su.pdf"
    assert plot.main(["seen-unseen", *map(str, runs), "--out", str(path)]) == 0
    assert path.read_bytes()[:4] == b"%PDF"
    _, drawn = plot.plot("seen-unseen", [str(r) for r in runs], str(tmp_path / "su.png"))
    assert drawn == {"curves": 2, "ausuc": [r["seen_unseen"]["ausuc"] for r in results],
                     "points": [len(r["seen_unseen"]["S"]) for r in results]}
    grw = quick_run_folder(tmp_path_factory, "grw")  # continual: no GZSL curve
    capsys.readouterr()
    assert plot.main(["seen-unseen", str(runs[0]), str(grw), "--out", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no seen-unseen curve" in err[0] and str(grw) in err[0]
    assert plot.main(["tasks", str(grw), str(grw), "--out", str(path)]) == 2  # several folders: seen-unseen only
