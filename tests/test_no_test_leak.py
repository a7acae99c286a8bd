"""The test split never reaches training or model selection.

Each method runs twice on the built-in synthetic data: as is, and with the test samples tampered
with (their labels permuted within each test split, their features replaced by noise). Everything a
method learns or selects must come out bit-identical; only the reported test metrics may move, and
they must move (otherwise the tampering proved nothing). CVC's transductive stage legitimately reads
the unlabelled test_unseen features, so for CVC the labels and the features are tampered with
separately: permuted labels must leave its pseudo-labels and its whole state unchanged, noisy
features must leave its validation selection unchanged.
"""
from dataclasses import replace

import pytest
import torch

from tests.quick_runs import quick_run
from zslfast.data import ContinualSplit, make_synthetic
from zslfast.data.regions import RegionDataset, RegionFeatures
from zslfast.data.synthetic_regions import make_synthetic_regions
from zslfast.engine import METHODS, method_class
from zslfast.models import cvc
from zslfast.config import resolve_config
from zslfast.engine.continual import task_setting


def only_for_testing(data, method):
    """The samples a method may only evaluate on: the test splits' (outside trainval); for GRW,
    the continual split's per-image test set."""
    if method_class(method).setting.startswith("continual"):
        cfg = resolve_config(method, "synthetic", quick=True)
        s, t = task_setting(data, cfg)
        test = ContinualSplit(data.labels, data.num_classes, s, t, **cfg["split"]).test_idx
        # permuted within each of the dataset's own splits, which keeps its seen/unseen checks true
        return [test[torch.isin(test, data.splits[k])] for k in ("trainval", "test_seen", "test_unseen")]
    tv = data.splits["trainval"]
    return [idx[~torch.isin(idx, tv)] for idx in (data.splits["test_seen"], data.splits["test_unseen"])]


def tampered(data, groups, labels=True, features=True, seed=123):
    """A copy of ``data`` whose samples in each index group have their labels permuted within the
    group and/or their features (vectors or region maps) replaced by noise of the features' mean
    and spread."""
    g = torch.Generator().manual_seed(seed)
    regions = isinstance(data, RegionDataset)
    original = data.features.read() if regions else data.features
    x, y = original.clone(), data.labels.clone()
    for idx in groups:
        if labels:
            y[idx] = y[idx][torch.randperm(idx.numel(), generator=g)]
        if features:
            noise = original.mean() + original.std() * torch.randn(idx.numel(), *x.shape[1:], generator=g)
            x[idx] = noise.clamp_min(0) if regions else noise  # region maps are post-ReLU
    assert not torch.equal(y, data.labels) or not labels
    return replace(data, features=RegionFeatures(array=x.numpy()) if regions else x, labels=y)


def assert_identical(a, b, path="state"):
    """Exact equality of nested dicts/lists of tensors and numbers."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_identical(u, v, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


# Every registered method, by being registered. The two GAN baselines run in the slow tier: their
# evaluation and selection are the generative family's (engine/generative.py), which GSMFlow and
# SC-EGG check here in the default tier, and their tampered quick runs would put it over 5 minutes.
# There, both of their runs are shortened (2 GAN epochs, 2 classifier epochs; still a validation
# selection among evaluated epochs and a final retraining).
SLOW = {"tfvaegan", "clswgan"}
SHORT = ("--set", "epochs=2", "--set", "classifier.epochs=2")


@pytest.mark.parametrize("method", [pytest.param(m, marks=[pytest.mark.slow] if m in SLOW else [])
                                    for m in sorted(METHODS)])
def test_tampered_test_samples_change_nothing_but_the_test_metrics(method, tmp_path_factory):
    data = make_synthetic_regions(seed=0) if method_class(method).inputs == "regions" else make_synthetic(seed=0)
    extra = SHORT if method in SLOW else ()
    clean_res, clean_ckpt = quick_run(tmp_path_factory, method, *extra)
    bad = tampered(data, only_for_testing(data, method))
    res, ckpt = quick_run(tmp_path_factory, method, *extra, data=bad, tag="tampered")
    assert_identical(ckpt["state"], clean_ckpt["state"])
    assert_identical(res["selection"], clean_res["selection"], "selection")
    if method == "grw":
        assert [t["train_samples"] for t in res["per_task"]] == [t["train_samples"] for t in clean_res["per_task"]]
    assert res["metrics"] != clean_res["metrics"]


def test_cvc_transductive_pseudo_labels_never_read_the_test_labels(tmp_path_factory, monkeypatch):
    """Permuted test labels: the same pseudo-labels at every refresh and the same final state;
    noisy test features: the same validation choices (the validation run's unlabelled data are
    held-out validation classes from trainval, never test images)."""
    data = make_synthetic(seed=0)
    groups = only_for_testing(data, "cvc")
    args = ("--set", "transductive=true")
    recorded = []
    original = cvc.pseudo_labels

    def recording(scores, *a, **k):
        pos, cls = original(scores, *a, **k)
        recorded[-1].append((pos.clone(), cls.clone()))
        return pos, cls

    monkeypatch.setattr(cvc, "pseudo_labels", recording)
    runs = {}
    for tag, variant in (("record", data), ("permuted", tampered(data, groups, features=False))):
        recorded.append([])
        runs[tag] = quick_run(tmp_path_factory, "cvc", *args, data=variant, tag=tag)
    assert len(recorded[0]) > 1  # validation and final transductive runs, refreshed every epoch
    assert_identical(recorded[1], recorded[0], "pseudo_labels")
    assert_identical(runs["permuted"][1]["state"], runs["record"][1]["state"])
    assert runs["permuted"][0]["metrics"] != runs["record"][0]["metrics"]

    noisy_res, noisy_ckpt = quick_run(tmp_path_factory, "cvc", *args, data=tampered(data, groups, labels=False),
                                      tag="noisy")
    assert_identical(noisy_res["selection"], runs["record"][0]["selection"], "selection")
    assert_identical(noisy_ckpt["state"]["inductive"], runs["record"][1]["state"]["inductive"])
    # and the features did reach the transductive stage, as they should
    assert not torch.equal(noisy_ckpt["state"]["transductive"]["rows"], runs["record"][1]["state"]["transductive"]["rows"])
