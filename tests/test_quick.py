"""`--quick` is a smoke run, but it must still learn: every registered method's quick budget on the
built-in synthetic data reaches at least 1.5x chance (ZSL T1 among the 10 unseen classes, or GRW's
mUA among all 50 classes) with a non-zero harmonic mean, so a user trying it does not conclude the
method is broken. (Each run takes seconds; the time is reported in results.json, not asserted.)"""
import pytest

from tests.quick_runs import quick_run
from zslfast.data import make_synthetic
from zslfast.data.synthetic_regions import make_synthetic_regions
from zslfast.engine import METHODS, method_class


@pytest.mark.parametrize("method", sorted(METHODS))
def test_quick_run_learns(method, tmp_path_factory):
    res, _ = quick_run(tmp_path_factory, method)
    m = res["metrics"]
    data = make_synthetic_regions(seed=0) if method_class(method).inputs == "regions" else make_synthetic(seed=0)
    if res["setting"].startswith("continual"):
        chance = 100 / data.num_classes
        assert m["mUA"] >= 1.5 * chance and m["mH"] > 0, m
    else:
        chance = 100 / data.unseen_classes.numel()
        assert m["zsl_t1"] >= 1.5 * chance and m["gzsl_h"] > 0, m
