import json
import os
import subprocess
import sys

import numpy as np
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
    assert main(["--quick", "--out", str(out), "--no-progress", "--set", "calibration=0.1"]) == 0
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
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # atomic writes leave no temporaries
    printed = capsys.readouterr().out
    assert "zsl_t1" in printed and "gzsl_h" in printed
    # select-on-test is explicit and recorded
    assert main(["--quick", "--out", str(out), "--no-progress", "--select-on-test"]) == 0
    assert json.loads((out / "results.json").read_text())["selection"]["on"].startswith("test")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "zslfast.train", *args], capture_output=True, text=True, timeout=300)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    cases = [["--dataset", "MNIST"], ["--dataset", "CUB"], ["--dataset", "CUB", "--data-root", str(tmp_path)],
             ["--set", "no_such_key=1"], ["--set", "feature_norm=zscore"], ["--like", "NOPE"],
             ["--config", str(tmp_path / "missing.yaml")], ["--device", "cuda:7"] if not torch.cuda.is_available()
             else ["--device", "tpu"]]
    for args in cases:
        proc = _cli(*args, "--out", str(tmp_path / "out"))
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("[zslfast]")]
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "out" / "results.json").exists()


def test_set_values_are_parsed_as_yaml_with_numbers_in_e_notation():
    from zslfast.config import parse_set, resolve_config

    assert parse_set("lr=3e-4") == {"lr": 3e-4}  # YAML 1.1 alone would give the string "3e-4"
    assert parse_set("a.b=[1, 2]") == {"a": {"b": [1, 2]}}
    assert parse_set("schedule=two_step") == {"schedule": "two_step"}
    cfg = resolve_config("grw", "CUB", overrides=["rw.steps=2", "lr=1e-3"])
    assert cfg["rw"]["steps"] == 2 and cfg["lr"] == 1e-3
    assert cfg["lsr"]["margin"] == 0.04 and cfg["rw"]["decay"] == 0.7  # dataset layer and defaults kept
