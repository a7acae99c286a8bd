"""Golden results: the metrics every method and setting reaches on the built-in synthetic data with
fixed seeds, recorded before a refactor so that the refactor can prove it moved nothing.

    python -m zslfast.golden record [--budget quick|default]   # write zslfast/golden/<budget>.json
    python -m zslfast.golden check  [--budget quick|default]   # rerun and compare, exit 1 on a change

``quick`` is the ``--quick`` budget (seconds per run; the test suite checks it); ``default`` is each
method's synthetic section (minutes in all; run it by hand around a refactor). Results are compared
exactly, but only on the CPU capability and torch version they were recorded with: another SIMD
level changes the rounding of the kernels, and with it the metrics, legitimately.
"""
import argparse
import json
import os
import sys
import tempfile

import torch

# (name, training-CLI arguments): every method, and every setting that changes its code path.
RUNS = [
    ("eszsl", ["--method", "eszsl"]),
    ("gsmflow", ["--method", "gsmflow"]),
    ("grw_interpolation", ["--method", "grw"]),
    ("grw_learnable", ["--method", "grw", "--set", "attribute_generation=learnable"]),
    ("cvc_inductive", ["--method", "cvc"]),
    ("cvc_transductive", ["--method", "cvc", "--set", "transductive=true"]),
    ("scegg", ["--method", "scegg"]),
]
FOLDER = os.path.join(os.path.dirname(__file__), "golden")


def environment():
    """What the recorded numbers depend on besides the code."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


def run_args(args, budget):
    """The full argument list of one golden run (CPU, seed 0, no progress bars)."""
    return [*args, "--device", "cpu", "--seed", "0", "--no-progress", *(["--quick"] if budget == "quick" else [])]


def summary(results):
    """The part of a results.json that a golden file pins: the metrics, the per-task metrics, what
    was selected (``chosen``) and the selection score of each choice (``scores``)."""
    choices = results["selection"]["choices"]
    return {"metrics": results["metrics"], "per_task": results["per_task"] and
            [{k: t[k] for k in ("task", "S", "U", "H", "train_samples")} for t in results["per_task"]],
            "chosen": {k: c["value"] for k, c in choices.items()},
            "scores": {k: c["score"] for k, c in choices.items() if c["score"] is not None}}


def matches(now, golden):
    """Equal metrics, per-task metrics and choices; equal scores for the choices whose score the
    golden file holds (files recorded before the engine did not record every score)."""
    if golden is None or any(now[k] != golden[k] for k in ("metrics", "per_task", "chosen")):
        return False
    return all(now["scores"].get(k) == v for k, v in golden.get("scores", {}).items())


def measure(budget, runs=RUNS, progress=True):
    """{name: summary} of every golden run (each through the training CLI, in-process)."""
    from zslfast.train import main

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in runs:
            if progress:
                print(f"[golden] {name} ({budget})", file=sys.stderr)
            folder = os.path.join(tmp, name)
            if main([*run_args(args, budget), "--out", folder]) != 0:
                raise SystemExit(f"golden run {name} failed")
            with open(os.path.join(folder, "results.json")) as f:
                out[name] = summary(json.load(f))
    return out


def path(budget):
    return os.path.join(FOLDER, f"{budget}.json")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zslfast.golden", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["record", "check"])
    p.add_argument("--budget", choices=["quick", "default"], default="quick")
    args = p.parse_args(argv)
    results = measure(args.budget)
    if args.action == "record":
        from zslfast.io import write_json

        os.makedirs(FOLDER, exist_ok=True)
        write_json(path(args.budget), {"environment": environment(), "runs": results})
        print(f"wrote {path(args.budget)}")
        return 0
    with open(path(args.budget)) as f:
        golden = json.load(f)
    if golden["environment"] != environment():
        print(f"golden results were recorded on {golden['environment']}, this is {environment()}: not comparable")
        return 1
    changed = [name for name in results if not matches(results[name], golden["runs"].get(name))]
    for name in changed:
        print(f"{name}: golden {golden['runs'].get(name)}\n{' ' * len(name)}  now    {results[name]}")
    print("golden results reproduced" if not changed else f"{len(changed)} run(s) changed")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
