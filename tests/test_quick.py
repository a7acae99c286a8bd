"""`--quick` is a smoke run, but it must still learn: every registered method's quick budget on the
built-in synthetic data reaches at least twice chance in ZSL T1 among the 10 unseen classes (20;
the untrained models reach 2.5-7.7) or three times chance in GRW's mUA among all 50 classes (6; 1.7
untrained), and a harmonic mean of at least 5, so a user trying it does not conclude the method is
broken. The exact numbers are pinned by tests/test_golden.py on every CPU; the margins over each
method's own untrained model by its checkpoint test in tests/models. (Each run takes seconds; the
time is reported in results.json, not asserted.)"""
import pytest

from tests.quick_runs import method_params, quick_run
from zslfast.data import make_synthetic
from zslfast.data.synthetic_regions import make_synthetic_regions
from zslfast.engine import METHODS, method_class


@pytest.mark.parametrize("method", method_params(METHODS))
def test_quick_run_learns(method, tmp_path_factory):
    res, _ = quick_run(tmp_path_factory, method)
    m = res["metrics"]
    data = make_synthetic_regions(seed=0) if method_class(method).inputs == "regions" else make_synthetic(seed=0)
    if res["setting"].startswith("continual"):
        chance = 100 / data.num_classes
        assert m["mUA"] >= 3 * chance and m["mH"] >= 5, m
    else:
        chance = 100 / data.unseen_classes.numel()
        assert m["zsl_t1"] >= 2 * chance and m["gzsl_h"] >= 5, m
