import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from zslfast.models.eszsl import fit_eszsl
from zslfast.train import main


def test_eszsl_closed_form_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 7))
    y = rng.integers(0, 4, 30)
    a = rng.standard_normal((6, 5))  # 6 classes, 4 of them in training
    gamma, lam = 0.3, 2.0
    big_y = -np.ones((30, 4))
    big_y[np.arange(30), y] = 1
    s = a[:4].T  # a × z
    v = np.linalg.inv(x.T @ x + gamma * np.eye(7)) @ x.T @ big_y @ s.T @ np.linalg.inv(s @ s.T + lam * np.eye(5))
    ours = fit_eszsl(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(a), gamma, lam)
    assert np.allclose(ours.numpy(), v, atol=1e-10)


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--quick", "--device", "cpu", "--out", str(out), "--no-progress", "--set", "calibration=0.1"]) == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("method", "dataset", "setting", "metrics", "per_task", "timings", "config", "versions",
                "backend", "seed", "device", "selection", "checkpoint"):
        assert key in res
    assert res["method"] == "eszsl" and res["dataset"] == "synthetic" and res["config"]["calibration"] == 0.1
    assert res["selection"]["on"] == "validation"
    assert set(res["metrics"]) == {"zsl_t1", "gzsl_s", "gzsl_u", "gzsl_h"}
    assert 25 < res["metrics"]["zsl_t1"] < 90  # far above chance (10%), far below 100%
    assert res["versions"]["torch"] == torch.__version__
    ckpt = torch.load(out / "checkpoint.pt")
    assert ckpt["state"]["V"].shape == (512, 64)
    # the saved V reproduces the reported ZSL T1 and GZSL S/U (scores x·V·a, seen scores calibrated)
    from zslfast.data import make_synthetic
    data = make_synthetic(seed=0).normalized("l2")
    v, a = ckpt["state"]["V"].double().numpy(), data.attributes.double().numpy()
    seen, unseen = data.seen_classes.numpy(), data.unseen_classes.numpy()

    def acc(split, classes, cal):
        x, y = data.subset(split)
        sc = x.double().numpy() @ v @ a.T
        sc[:, seen] -= cal
        pred = classes[np.argmax(sc[:, classes], axis=1)]
        return 100 * np.mean([np.mean(pred[y.numpy() == c] == c) for c in np.unique(y.numpy())])

    everything = np.arange(data.num_classes)
    expected = [acc("test_unseen", unseen, 0.0), acc("test_seen", everything, 0.1), acc("test_unseen", everything, 0.1)]
    assert [res["metrics"][k] for k in ("zsl_t1", "gzsl_s", "gzsl_u")] == pytest.approx(expected, abs=1e-9)
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # atomic writes leave no temporaries
    printed = capsys.readouterr().out
    assert "zsl_t1" in printed and "gzsl_h" in printed
    # select-on-test is explicit and recorded
    assert main(["--quick", "--device", "cpu", "--out", str(out), "--no-progress", "--select-on-test", "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["selection"]["on"] == "test"


def _exit_code(args):
    """main()'s exit code, in-process (argparse errors exit through SystemExit)."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    cases = [["--dataset", "MNIST"], ["--dataset", "CUB"], ["--dataset", "CUB", "--data-root", str(tmp_path)],
             ["--set", "no_such_key=1"], ["--set", "feature_norm=zscore"], ["--like", "NOPE"],
             ["--config", str(tmp_path / "missing.yaml")], ["--device", "cuda:7"] if not torch.cuda.is_available()
             else ["--device", "tpu"]]
    for args in cases:
        assert _exit_code([*args, "--out", str(tmp_path / "out"), "--no-progress"]) == 2, args
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("[zslfast]")]
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, (args, err)
    assert not (tmp_path / "out" / "results.json").exists()


def test_the_command_line_entry_point_runs_as_a_module(tmp_path):
    """One real `python -m zslfast.train` process: the module entry point and its exit code."""
    proc = subprocess.run([sys.executable, "-m", "zslfast.train", "--set", "feature_norm=zscore"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("zslfast: error: setting feature_norm")


def test_set_values_are_parsed_as_yaml_with_numbers_in_e_notation():
    from zslfast.config import parse_set, resolve_config

    assert parse_set("lr=3e-4") == {"lr": 3e-4}  # YAML 1.1 alone would give the string "3e-4"
    assert parse_set("a.b=[1, 2]") == {"a": {"b": [1, 2]}}
    assert parse_set("schedule=two_step") == {"schedule": "two_step"}
    cfg = resolve_config("grw", "CUB", overrides=["rw.steps=2", "lr=1e-3"])
    assert cfg["rw"]["steps"] == 2 and cfg["lr"] == 1e-3
    assert cfg["lsr"]["margin"] == 0.04 and cfg["rw"]["decay"] == 0.7  # dataset layer and defaults kept


def _numpy_grid_scores(data, gammas, lambdas):
    """ZSL T1 (percent, per-class mean) of every (γ, λ) on ``data``'s test splits, computed with
    numpy's solver from the closed form, independently of ESZSLSolver's eigendecompositions."""
    tv = data.splits["trainval"].numpy()
    x, y = data.features.numpy().astype(np.float64), data.labels.numpy()
    a = data.attributes.numpy().astype(np.float64)
    classes = np.unique(y[tv])
    big_y = -np.ones((tv.size, classes.size))
    big_y[np.arange(tv.size), np.searchsorted(classes, y[tv])] = 1
    xt, s = x[tv], a[classes].T
    unseen = data.unseen_classes.numpy()
    xu, yu = x[data.splits["test_unseen"].numpy()], y[data.splits["test_unseen"].numpy()]
    scores = {}
    for ge in gammas:
        left = np.linalg.solve(xt.T @ xt + 10.0 ** ge * np.eye(xt.shape[1]), xt.T @ big_y @ s.T)
        for le in lambdas:
            v = np.linalg.solve((s @ s.T + 10.0 ** le * np.eye(s.shape[0])).T, left.T).T
            pred = unseen[np.argmax(xu @ v @ a[unseen].T, axis=1)]
            scores[(ge, le)] = 100 * np.mean([np.mean(pred[yu == c] == c) for c in np.unique(yu)])
    return scores


@pytest.mark.parametrize("select_on_test", [False, True])
def test_eszsl_chooses_the_grid_point_that_maximises_its_selection_split(tmp_path, select_on_test):
    """The chosen (γ, λ) maximises ZSL T1 over the grid on the validation split (or on the test
    split under --select-on-test), as recomputed with numpy; the reported score is that maximum."""
    from zslfast.config import resolve_config
    from zslfast.data import make_synthetic

    out = tmp_path / "s"
    grid = ["--set", "gamma_exponents=[-2, -1, 0, 1, 2]", "--set", "lambda_exponents=[-2, -1, 0, 1, 2]"]
    assert main(["--no-progress", "--device", "cpu", "--out", str(out), *grid,
                 *(["--select-on-test"] if select_on_test else [])]) == 0
    sel = json.loads((out / "results.json").read_text())["selection"]
    cfg = resolve_config("eszsl", "synthetic")
    data = make_synthetic(seed=0).normalized(cfg["feature_norm"])
    split = data if select_on_test else data.validation_split(**cfg["validation"])
    scores = _numpy_grid_scores(split, [-2, -1, 0, 1, 2], [-2, -1, 0, 1, 2])
    choice = sel["choices"]["gamma_lambda_exponents"]
    chosen = tuple(choice["value"])
    best = max(scores.values())
    assert scores[chosen] == pytest.approx(best, abs=1e-9) and choice["score"] == pytest.approx(best, abs=1e-9)
    assert {tuple(c): s for c, s in choice["history"]} == pytest.approx(scores, abs=1e-9)
    assert min(scores.values()) < best - 5  # the grid matters: a wrong choice would be visible
