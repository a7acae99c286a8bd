"""The Python API (``zslfast.load``): a trained run's predictions on the raw test features (the API
applies the run's normalisation itself) give exactly the metrics the run reported, for every golden
run; top-k, class names and bad input behave as documented."""
import os

import pytest
import torch

import zslfast
from tests.quick_runs import quick_run, quick_run_folder, run_params
from zslfast import golden
from zslfast.data import ContinualSplit, make_synthetic
from zslfast.data.synthetic_regions import make_synthetic_regions
from zslfast.engine import method_class
from zslfast.engine.continual import task_setting
from zslfast.errors import ZSLError


def _folder(args, factory):
    extra = tuple(args[2:])
    res, _ = quick_run(factory, args[1], *extra)
    return res, quick_run_folder(factory, args[1], *extra)


def _per_class_accuracy(pred, labels, classes):
    """Mean over ``classes`` of each class's fraction of correct predictions, in percent."""
    return 100 * sum(float((pred[labels == c] == c).double().mean()) for c in classes.tolist()) / classes.numel()


def _raw(method):
    data = make_synthetic_regions(seed=0) if method_class(method).inputs == "regions" else make_synthetic(seed=0)
    x = data.features.read() if hasattr(data.features, "read") else data.features
    return data, x


@pytest.mark.parametrize("name,args", run_params(golden.RUNS))
def test_loaded_predictions_give_the_reported_metrics(name, args, tmp_path_factory):
    res, folder = _folder(args, tmp_path_factory)
    model = zslfast.load(folder)
    assert model.method == args[1] and model.config == res["config"]
    data, x = _raw(args[1])
    if res["setting"].startswith("continual"):  # the model after the last trained task: its S and U
        s, t = task_setting(data, res["config"])
        split = ContinualSplit(data.labels, data.num_classes, s, t, **res["config"]["split"])
        task = split.task(split.trained_tasks[-1])
        got = {}
        for key, idx in (("S", task.test_seen), ("U", task.test_unseen)):
            labels = data.labels[idx]
            got[key] = _per_class_accuracy(model.predict(x[idx]), labels, torch.unique(labels))
        want = res["per_task"][-1]
        assert (got["S"], got["U"]) == pytest.approx((want["S"], want["U"]), abs=1e-9)
        return
    u_idx, s_idx = data.splits["test_unseen"], data.splits["test_seen"]
    t1 = _per_class_accuracy(model.predict(x[u_idx], "zsl"), data.labels[u_idx], data.unseen_classes)
    u = _per_class_accuracy(model.predict(x[u_idx]), data.labels[u_idx], data.unseen_classes)
    s = _per_class_accuracy(model.predict(x[s_idx]), data.labels[s_idx], data.seen_classes)
    want = {k: v for k, v in res["metrics"].items() if not k.startswith("inductive_")}
    got = {"zsl_t1": t1, "gzsl_s": s, "gzsl_u": u, "gzsl_h": 2 * s * u / (s + u) if s + u else 0.0}
    assert got == pytest.approx(want, abs=1e-9)
    # The seen-unseen curve: its point at the run's calibration is the reported S/U; its ends are the
    # GZSL scores' argmax among the seen classes alone (S, U 0) and among the unseen alone (S 0, U).
    curve = res["seen_unseen"]
    assert (curve["at_run"]["S"], curve["at_run"]["U"]) == pytest.approx((want["gzsl_s"], want["gzsl_u"]), abs=1e-9)
    seen, unseen = data.seen_classes, data.unseen_classes
    s_only = seen[model.scores(x[s_idx])[:, seen].argmax(1)]
    u_only = unseen[model.scores(x[u_idx])[:, unseen].argmax(1)]
    assert (curve["S"][0], curve["U"][0]) == pytest.approx(
        (_per_class_accuracy(s_only, data.labels[s_idx], seen), 0.0), abs=1e-9)
    assert (curve["S"][-1], curve["U"][-1]) == pytest.approx(
        (0.0, _per_class_accuracy(u_only, data.labels[u_idx], unseen)), abs=1e-9)
    assert 0 < curve["ausuc"] <= curve["S"][0] * curve["U"][-1] / 100


def test_top_k_names_and_bad_input(tmp_path_factory):
    _, folder = _folder(["--method", "eszsl"], tmp_path_factory)
    model = zslfast.load(os.path.join(folder, "model.pt"))
    data, x = _raw("eszsl")
    x = x[:20]
    top = model.predict(x, top_k=3)
    assert top.shape == (20, 3) and torch.equal(top[:, 0], model.predict(x))
    scores = model.scores(x)
    assert (scores.gather(1, top[:, :1]) >= scores.gather(1, top[:, 1:2])).all()
    zsl = model.scores(x, "zsl")
    assert torch.isinf(zsl[:, model.seen]).all() and torch.isfinite(zsl[:, model.unseen]).all()
    assert model.class_names(top)[0] == [data.class_names[int(i)] for i in top[0]]
    with pytest.raises(ZSLError, match=r"\[511\] per sample, the model was trained on \[512\]"):
        model.predict(x[:, :-1])
    bad = x.clone()
    bad[3, 7] = float("nan")
    with pytest.raises(ZSLError, match="NaN"):
        model.predict(bad)
    with pytest.raises(ZSLError, match="setting must be"):
        model.scores(x, "gzls")
    with pytest.raises(ZSLError, match="top_k"):
        model.predict(x, top_k=0)
    with pytest.raises(ZSLError, match="ZSL predicts among the 10 unseen classes"):
        model.predict(x, "zsl", top_k=11)
    with pytest.raises(ZSLError, match="expected \\[N, D\\] feature vectors"):
        model.predict(x[0])


def test_the_command_line_gives_the_api_predictions_and_refuses_bad_input(tmp_path_factory, tmp_path, capsys):
    import numpy as np

    from zslfast.predict import main as predict_main

    _, folder = _folder(["--method", "gsmflow"], tmp_path_factory)
    _, x = _raw("gsmflow")
    x = x[:25]
    np.save(tmp_path / "x.npy", x.numpy())
    torch.save(x.clone(), tmp_path / "x.pt")
    out = tmp_path / "pred.csv"
    assert predict_main([str(folder), "--features", str(tmp_path / "x.npy"), "--top-k", "2", "--out", str(out)]) == 0
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows[0] == ["sample", "class_1", "name_1", "class_2", "name_2"] and len(rows) == 26
    model = zslfast.load(folder)
    want = model.predict(x, top_k=2)
    assert [[int(r[1]), int(r[3])] for r in rows[1:]] == want.tolist()
    assert [r[2] for r in rows[1:]] == model.class_names(want[:, 0])
    capsys.readouterr()
    assert predict_main([str(folder), "--features", str(tmp_path / "x.pt")]) == 0  # printed, same rows
    assert capsys.readouterr().out.splitlines()[1:] == [",".join(r[:3]) for r in rows[1:]]
    np.save(tmp_path / "bad.npy", x[:, :10].numpy())
    out2 = tmp_path / "bad.csv"
    assert predict_main([str(folder), "--features", str(tmp_path / "bad.npy"), "--out", str(out2)]) == 2
    assert "per sample, the model was trained on [512]" in capsys.readouterr().err and not out2.exists()
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert predict_main([str(folder), "--features", str(tmp_path / "junk.npy")]) == 2
    assert "cannot read it" in capsys.readouterr().err
