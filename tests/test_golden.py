"""The golden results (zslfast/golden/quick.json, recorded with ``python -m zslfast.golden record``)
are reproduced exactly: every method and setting on the --quick budget gives the recorded metrics,
per-task results and selection. A refactor that moves a number must re-record the file and explain
the change. Compared only on the CPU capability and torch version the file was recorded with."""
import json

import pytest

from tests.quick_runs import quick_run
from zslfast import golden


def _golden(budget):
    with open(golden.path(budget)) as f:
        return json.load(f)


@pytest.mark.parametrize("name,args", golden.RUNS, ids=[name for name, _ in golden.RUNS])
def test_quick_runs_reproduce_the_golden_results(name, args, tmp_path_factory):
    recorded = _golden("quick")
    if recorded["environment"] != golden.environment():
        pytest.skip(f"golden results recorded on {recorded['environment']}, this is {golden.environment()}")
    assert args[0] == "--method"
    res, _ = quick_run(tmp_path_factory, args[1], *args[2:])
    assert golden.matches(golden.summary(res), recorded["runs"][name]), (golden.summary(res), recorded["runs"][name])


def test_every_registered_method_has_golden_results():
    from zslfast.engine import METHODS

    methods = {args[1] for _, args in golden.RUNS}
    assert methods == set(METHODS)
    assert set(_golden("quick")["runs"]) == {name for name, _ in golden.RUNS}
