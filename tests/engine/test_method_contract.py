"""Every registered method fulfils the engine's contract: it is a checked Method subclass, its
--quick run writes the one results.json schema (metrics, selection, history), the same seed gives
identical metrics twice in one process, and the registry has no import cycle."""
import subprocess
import sys

import pytest

from tests.quick_runs import left_out_data, left_out_run, method_params, quick_run
from tests.test_resume import CASES as RESUME_CASES
from zslfast.engine import METHODS, Method, method_class
from zslfast.engine.context import SELECTION_MODES
from zslfast.engine.method import check_contract

METRICS = {"zsl+gzsl": {"zsl_t1", "gzsl_s", "gzsl_u", "gzsl_h"}, "continual gzsl": {"mSA", "mUA", "mH"}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_registered_class_fulfils_the_contract(name):
    cls = method_class(name)
    assert issubclass(cls, Method) and cls.name == name
    assert set(cls.selection_modes) <= set(SELECTION_MODES)


def test_a_generative_method_without_its_recipe_or_generation_breaks_the_contract():
    from zslfast.engine.generative import GenerativeMethod
    from zslfast.config.settings import Section

    class HalfDone(GenerativeMethod):
        name = "half_done"
        settings = Section()

    with pytest.raises(TypeError, match="abstract members left: generation, generator_networks, recipe, test_synthesizer"):
        check_contract(HalfDone, "half_done")


def test_contract_check_names_what_is_missing():
    class Incomplete(Method):
        name = "incomplete"
        setting = "zsl+gzsl"

    with pytest.raises(TypeError, match="abstract members left: run.*settings is not"):
        check_contract(Incomplete, "incomplete")


@pytest.mark.parametrize("name", method_params(METHODS))
def test_quick_run_writes_the_results_schema(name, tmp_path_factory):
    res, ckpt = quick_run(tmp_path_factory, name)
    cls = method_class(name)
    setting = "continual gzsl" if res["setting"].startswith("continual") else "zsl+gzsl"
    assert METRICS[setting] <= set(res["metrics"])
    assert all(isinstance(v, float) for v in res["metrics"].values())
    sel = res["selection"]
    assert set(sel) == {"on", "metric", "choices"} and sel["on"] == cls.selection_modes[0]
    assert (sel["metric"] is None) == (sel["on"] == "fixed")
    for key, choice in sel["choices"].items():
        assert {"value", "score", "history"} <= set(choice) <= {"value", "score", "history", "metrics"}
        if "metrics" in choice and "[" not in key:  # the chosen evaluation's metrics hold its score
            assert choice["metrics"][sel["metric"]] == choice["score"]
        if choice["history"]:  # a chosen value is the first argmax of its history
            scores = [s for _, s in choice["history"]]
            assert choice["score"] == max(scores) and choice["value"] == choice["history"][scores.index(max(scores))][0]
    assert isinstance(res["history"], dict)
    for stage, records in res["history"].items():  # iterative methods: one record per epoch
        assert [r["epoch"] for r in records] == list(range(1, len(records) + 1)), stage
        assert all(r["steps"] > 0 and all(v == v for v in r.get("loss", {}).values()) for r in records), stage
    assert ckpt["method"] == name and ckpt["state"]


# Methods with a resume case (tests/test_resume.py, which every method that trains must have) are
# checked there: a resumed run reruns the session's quick run in the same process, after other runs
# moved the global RNG, and must give every number of it. The others (ESZSL) are checked here, on
# the new-classes tests' data (the built-in data without 5 classes), whose run they share.
RESUMED = {name.split("_")[0] for name, _, _ in RESUME_CASES}


@pytest.mark.parametrize("name", sorted(set(METHODS) - RESUMED))
def test_same_seed_same_metrics_in_one_process(name, tmp_path_factory, tmp_path):
    """A second run in the same process (the global RNG now in another state) gives the same numbers."""
    import torch

    import zslfast

    first = left_out_run(tmp_path_factory, name).results
    torch.manual_seed(12345)  # whatever a user's script did before must not matter
    torch.rand(7)
    again = zslfast.fit(name, left_out_data(name)[2], quick=True, out=str(tmp_path / "again"), progress=False).results
    assert again["metrics"] == first["metrics"] and again["selection"] == first["selection"]

    def tasks(res):  # everything but the wall-clock seconds
        return res["per_task"] and [{k: v for k, v in t.items() if k != "seconds"} for t in res["per_task"]]

    assert tasks(again) == tasks(first)


def test_registry_imports_no_method_and_has_no_cycle():
    """Importing the engine (or the CLI) loads no method module; each method module imports first,
    alone, in a fresh set of zslfast modules (one interpreter: the compiled operators and their
    registrations stay loaded, every other zslfast module is imported again), so a cycle fails."""
    code = f"""
import importlib, sys
import zslfast.engine, zslfast.train
assert not [m for m in sys.modules if m.startswith('zslfast.models.')], sorted(sys.modules)
for module in {[path.split(':')[0] for path in METHODS.values()]!r}:
    for name in [m for m in sys.modules if m.startswith('zslfast') and not m.startswith(('zslfast.ops', 'zslfast._'))]:
        del sys.modules[name]
    importlib.import_module(module)
"""
    subprocess.run([sys.executable, "-c", code], check=True)
