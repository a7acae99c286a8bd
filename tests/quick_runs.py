"""Quick runs of the training CLI shared by several test modules (each configuration runs once per
session): ``main()`` in-process on the built-in synthetic data, on the CPU (so that the outcomes
do not depend on which accelerator the test host has), optionally on a replacement dataset."""
import json
from unittest import mock

import torch

import zslfast.train
from zslfast.train import main

_CACHE = {}
_FOLDERS = {}

# The two GAN baselines' quick runs (about 40 s together on 2 cores) are checked in the slow tier:
# their training, evaluation and selection are the generative family's, which GSMFlow's and SC-EGG's
# default-tier runs check, and the slow tier trains them anyway (their resume cases).
SLOW_RUNS = {"tfvaegan", "clswgan"}


def run_params(runs):
    """pytest parameters (name, args) of golden-style runs, the GAN baselines' in the slow tier."""
    import pytest

    return [pytest.param(name, args, id=name, marks=[pytest.mark.slow] if args[1] in SLOW_RUNS else [])
            for name, args in runs]


def method_params(methods):
    """pytest parameters of method names whose test trains the method's quick run (SLOW_RUNS slow)."""
    import pytest

    return [pytest.param(m, marks=[pytest.mark.slow] if m in SLOW_RUNS else []) for m in sorted(methods)]


def quick_run(tmp_dir_factory, method, *extra, data=None, tag="clean"):
    """(results.json as a dict, checkpoint dict) of ``--method METHOD --quick --device cpu EXTRA``.
    ``data`` replaces the dataset the CLI would load (``tag`` names that variant in the cache)."""
    key = (method, extra, tag)
    if key not in _CACHE:
        out = tmp_dir_factory.mktemp(f"{method}_{tag}")
        argv = ["--method", method, "--quick", "--device", "cpu", "--no-progress", "--out", str(out), *extra]
        if data is None:
            code = main(argv)
        else:
            with mock.patch.object(zslfast.train, "load_data", lambda args, config: data):
                code = main(argv)
        assert code == 0, (method, extra, tag)
        _CACHE[key] = (json.loads((out / "results.json").read_text()), torch.load(out / "checkpoint.pt"))
        _FOLDERS[key] = out
    return _CACHE[key]


def quick_run_folder(tmp_dir_factory, method, *extra, data=None, tag="clean"):
    """The output folder of :func:`quick_run` (for tests that read its files; never write there)."""
    quick_run(tmp_dir_factory, method, *extra, data=data, tag=tag)
    return _FOLDERS[(method, extra, tag)]


def left_out_data(method):
    """(the built-in data ``method`` reads, the 5 of its 10 unseen classes left out, the data without
    them): for the new-classes tests, which add them back from their vectors."""
    from zslfast.data import make_synthetic
    from zslfast.data.synthetic_regions import make_synthetic_regions
    from zslfast.engine import method_class

    full = make_synthetic_regions(seed=0) if method_class(method).inputs == "regions" else make_synthetic(seed=0)
    left_out = full.unseen_classes[::2]
    return full, left_out, full.without_classes(left_out)


def left_out_run(tmp_dir_factory, method, **settings):
    """The :class:`zslfast.Run` of ``zslfast.fit(method, <data without 5 classes>, quick=True,
    **settings)``, once per session (shared by the new-classes tests and ESZSL's same-seed test)."""
    import zslfast

    key = ("left_out", method, tuple(sorted(settings.items())))
    if key not in _CACHE:
        out = tmp_dir_factory.mktemp(f"{method}_left_out")
        _CACHE[key] = zslfast.fit(method, left_out_data(method)[2], quick=True, out=str(out / "run"), progress=False,
                                  **settings)
    return _CACHE[key]
