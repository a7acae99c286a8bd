"""The golden results (zslfast/golden/quick.json, recorded with ``python -m zslfast.golden record``):
every method and setting on the --quick budget gives the recorded metrics, per-task results and
selection. A refactor that moves a number must re-record the file and explain the change.

The comparison never skips: exact in the environment the file was recorded in (CPU vendor, SIMD
level, torch build), and within ``golden.BAND`` points everywhere else (another CPU rounds
differently, legitimately; see zslfast/golden.py for how the band was sized). CI also sets
``ZSLFAST_REQUIRE_GOLDEN=1``, which turns any skip of a ``golden`` test into a failure."""
import json

import pytest

from tests.quick_runs import quick_run, run_params
from zslfast import golden


def _golden(budget):
    with open(golden.path(budget)) as f:
        return json.load(f)


@pytest.mark.golden
@pytest.mark.parametrize("name,args", run_params(golden.RUNS))
def test_quick_runs_reproduce_the_golden_results(name, args, tmp_path_factory):
    recorded = _golden("quick")
    assert args[0] == "--method"
    res, _ = quick_run(tmp_path_factory, args[1], *args[2:])
    now, want = golden.summary(res), recorded["runs"][name]
    if recorded["environment"] == golden.environment():
        assert golden.matches(now, want), (now, want)
    else:
        assert not golden.band_problems(now, want), golden.band_problems(now, want)


def test_the_band_tells_a_moved_metric_from_rounding():
    """``band_problems`` on hand-made summaries: within the band passes, beyond it, a NaN, a missing
    metric or another per-task sample count fails."""
    want = {"metrics": {"zsl_t1": 40.0, "gzsl_h": 30.0}, "per_task": None}
    ok = {"metrics": {"zsl_t1": 40.0 + golden.BAND, "gzsl_h": 30.0 - golden.BAND}, "per_task": None}
    assert golden.band_problems(ok, want) == []
    for bad in ({"zsl_t1": 40.0 + golden.BAND + 0.01, "gzsl_h": 30.0}, {"zsl_t1": float("nan"), "gzsl_h": 30.0},
                {"gzsl_h": 30.0}):
        assert golden.band_problems({"metrics": bad, "per_task": None}, want)
    tasks = {"metrics": {}, "per_task": [{"task": 1, "S": 50.0, "train_samples": 100}]}
    def task(s, n):
        return {"metrics": {}, "per_task": [{"task": 1, "S": s, "train_samples": n}]}

    assert golden.band_problems(task(51.0, 100), tasks) == []
    assert golden.band_problems(task(50.0, 99), tasks)
    assert golden.band_problems({"metrics": {}, "per_task": []}, tasks)


def test_every_registered_method_has_golden_results():
    from zslfast.engine import METHODS

    methods = {args[1] for _, args in golden.RUNS}
    assert methods == set(METHODS)
    assert set(_golden("quick")["runs"]) == {name for name, _ in golden.RUNS}
