"""Training curves (results.json history for every method) and --log tensorboard."""
import builtins
import json

import pytest

from tests.quick_runs import method_params, quick_run
from zslfast.engine import METHODS, method_class
from zslfast.engine.curves import CurveRecorder
from zslfast.engine.loop import EpochEvent
from zslfast.train import main as train_main


def test_recorder_keeps_repeated_stages_apart_and_skips_nested_ones():
    rec = CurveRecorder()
    for stage, epochs, nested in [("flow", 2, False), ("clf", 3, True), ("flow", 3, False)]:
        for e in range(1, epochs + 1):
            rec.on_epoch_end(EpochEvent(stage, e, epochs, {"epoch": e, "steps": 1, "loss": {"x": e / 10}}, {}, nested))
    h = rec.to_dict()
    assert list(h) == ["flow", "flow #2"]
    assert [r["epoch"] for r in h["flow"]] == [1, 2] and [r["epoch"] for r in h["flow #2"]] == [1, 2, 3]


# every registered method that trains for epochs (ESZSL is closed form), by being registered
ITERATIVE = sorted(m for m in METHODS if "epochs" in method_class(m).settings.fields)


def test_the_iterative_methods_are_found_in_the_registry():
    assert ITERATIVE == ["clswgan", "cvc", "grw", "gsmflow", "scegg", "tfvaegan"]


@pytest.mark.parametrize("method", method_params(ITERATIVE))
def test_every_iterative_method_records_its_curves(method, tmp_path_factory):
    res, _ = quick_run(tmp_path_factory, method)
    assert res["history"], "no training curves recorded"
    for stage, records in res["history"].items():
        assert [r["epoch"] for r in records] == list(range(1, len(records) + 1)), stage
        assert all("loss" in r for r in records), stage
    scored = [r for records in res["history"].values() for r in records if "score" in r]
    if res["selection"]["on"] == "validation":  # the chosen epoch is one of the recorded, scored epochs
        name = next(k for k in res["selection"]["choices"] if k.endswith("epochs"))
        choice = res["selection"]["choices"][name]
        assert any(r["epoch"] == choice["value"] and r["score"] == pytest.approx(choice["score"]) for r in scored)


def test_tensorboard_scalars_equal_the_history_and_change_nothing(tmp_path, tmp_path_factory):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["--method", "cvc", "--quick", "--device", "cpu", "--no-progress"]
    assert train_main(args + ["--out", str(tmp_path / "tb"), "--log", "tensorboard"]) == 0
    plain, _ = quick_run(tmp_path_factory, "cvc")
    logged = json.loads((tmp_path / "tb" / "results.json").read_text())
    assert plain["metrics"] == logged["metrics"] and plain["history"] == logged["history"]
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = set()
    for stage, records in logged["history"].items():
        for name in records[0]["loss"]:
            tag = f"{stage}/loss/{name}"
            expected.add(tag)
            got = [(s.step, s.value) for s in acc.Scalars(tag)]
            assert [s for s, _ in got] == [r["epoch"] for r in records]
            assert [v for _, v in got] == pytest.approx([r["loss"][name] for r in records], rel=1e-6)
        if any("score" in r for r in records):
            expected.add(f"{stage}/score")
            assert [s.value for s in acc.Scalars(f"{stage}/score")] == pytest.approx(
                [r["score"] for r in records if "score" in r], rel=1e-6)
    for name, value in logged["metrics"].items():  # and the final test metrics
        expected.add(f"final/{name}")
        assert [s.value for s in acc.Scalars(f"final/{name}")] == pytest.approx([value], rel=1e-6)
    assert tags == expected


def test_tensorboard_gets_a_continual_runs_per_task_scores(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "grw"
    assert train_main(["--method", "grw", "--quick", "--device", "cpu", "--no-progress", "--log", "tensorboard",
                       "--out", str(out)]) == 0
    per_task = json.loads((out / "results.json").read_text())["per_task"]
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    for key in ("S", "U", "H"):
        got = [(s.step, s.value) for s in acc.Scalars(f"task/{key}")]
        assert [step for step, _ in got] == [t["task"] for t in per_task]
        assert [v for _, v in got] == pytest.approx([t[key] for t in per_task], rel=1e-6)


def test_missing_tensorboard_is_one_clear_error_before_training(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert train_main(["--quick", "--no-progress", "--log", "tensorboard", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['zslfast: error: --log tensorboard needs the tensorboard package: pip install "zslfast[tensorboard]"']
    assert not (tmp_path / "r" / "results.json").exists()
