"""The test-split seal (zslfast/data/dataset.py): while a dataset is sealed no public path reads a
test split (dict(), {**}, .get, iteration, items/values, copies of the dataset), the unlabelled
features and the class partition stay readable, and the test splits open only for as many scoring
windows as the run reports (a report, e.g. a plot, only after them).

Whole runs: every validation-selection run is sealed from its start to its end by the training CLI
(tests/test_no_test_leak.py runs each method so); here, a run whose final evaluation trains its
classifier on test rows, or chooses its classifier epochs on the test split, fails loudly."""
from dataclasses import replace

import pytest
import torch

import zslfast.engine.generative as engine_generative
import zslfast.eval.generative as generative
from tests.quick_runs import quick_run
from zslfast.data import make_synthetic
from zslfast.data.dataset import SealedTestSplitError
from zslfast.eval.metrics import zsl_gzsl_metrics
from zslfast.models import scegg

BYPASSES = {
    "index": lambda s: s["test_seen"],
    "dict()": lambda s: dict(s),
    "{**}": lambda s: {**s},
    "get": lambda s: s.get("test_unseen"),
    "iteration": lambda s: [s[k] for k in s],
    "items": lambda s: list(s.items()),
    "values": lambda s: list(s.values()),
    "dict comprehension": lambda s: {k: v for k, v in s.items()},
}


@pytest.mark.parametrize("how", list(BYPASSES))
def test_no_public_path_reads_a_sealed_test_split(how):
    data = make_synthetic(seed=0)
    with data.sealed("a test", scorings=1):
        with pytest.raises(SealedTestSplitError, match="was read during a test"):
            BYPASSES[how](data.splits)
        for copy in (data.to("cpu"), data.normalized("l2"), replace(data, name="copy")):  # copies stay sealed
            with pytest.raises(SealedTestSplitError):
                BYPASSES[how](copy.splits)
        with pytest.raises(SealedTestSplitError):
            data.subset("test_unseen")
    assert torch.equal(BYPASSES["get"](data.splits), data.splits["test_unseen"])  # open again afterwards


def test_what_stays_readable_while_sealed():
    data = make_synthetic(seed=0)
    unseen, sizes = data.unseen_classes, {k: v.numel() for k, v in data.splits.items()}
    x_unl = data.features[data.splits["test_unseen"]]
    with data.sealed("a test"):
        assert torch.equal(data.unseen_classes, unseen) and data.split_sizes() == sizes
        assert "test_seen" in data.splits and set(data.splits) == set(sizes) and len(data.splits) == len(sizes)
        assert torch.equal(data.unlabelled("test_unseen"), x_unl)  # features, never labels
        x, y = data.subset("trainval")
        assert y.numel() == sizes["trainval"]
        view = data.validation_split()  # trainval only: built and used while sealed
        assert torch.equal(view.subset("test_unseen")[1].unique(), torch.tensor(view.info["validation"]["val_classes"]))
        assert "test_seen" in data.summary()


def test_scoring_windows_are_counted_and_reports_come_last():
    data = make_synthetic(seed=0)
    with data.sealed("a two-scoring run", scorings=2):
        with pytest.raises(SealedTestSplitError, match="before the final scoring"):
            with data.scoring(report=True):
                pass
        for _ in range(2):
            with data.scoring():
                data.subset("test_seen")
            with pytest.raises(SealedTestSplitError):  # the window closed again
                data.subset("test_seen")
        with pytest.raises(SealedTestSplitError, match="scored more often than a two-scoring run reports"):
            with data.scoring():
                pass
        with data.scoring(report=True):
            data.subset("test_unseen")
    with data.scoring():  # not sealed: nothing to count
        data.subset("test_unseen")


def test_zsl_gzsl_metrics_is_one_scoring():
    data = make_synthetic(seed=0)
    att = data.attributes
    with data.sealed("a one-scoring run", scorings=1):
        zsl_gzsl_metrics(lambda x: x[:, :att.shape[0]], data)
        with pytest.raises(SealedTestSplitError, match="scored more often"):
            zsl_gzsl_metrics(lambda x: x[:, :att.shape[0]], data)


# ------------------------------------------------------------------ leaks in a whole run fail loudly
def test_final_classifier_trained_on_test_rows_fails(monkeypatch, tmp_path_factory):
    """A final evaluation that adds the test_seen rows (with their labels) to the GZSL classifier's
    training data raises in a validation-selection run."""
    real = generative.generative_evaluation

    def leaky(synthesize, data, *a, **k):
        x, y = data.subset("test_seen")  # what a leak would do before training the classifier
        return real(synthesize, data, *a, **k)

    monkeypatch.setattr(engine_generative, "generative_evaluation", leaky)
    with pytest.raises(SealedTestSplitError, match="test_seen"):
        quick_run(tmp_path_factory, "gsmflow", "--set", "epochs=2", "--set", "eval_start=1", "--set", "eval_every=1",
                  tag="leaky_rows")


def test_final_classifier_epochs_chosen_on_test_fails(monkeypatch, tmp_path_factory):
    """The refitted model's evaluation choosing its classifier epochs on the data it reports (the
    test split) instead of taking the counts chosen on validation raises: every classifier epoch's
    score is one more scoring than the run reports."""
    real = scegg.SCEGG.evaluate
    monkeypatch.setattr(scegg.SCEGG, "evaluate",
                        lambda self, model, data, cfg, ctx, classifier_epochs=None, keep=None:
                        real(self, model, data, cfg, ctx, keep=keep))
    with pytest.raises(SealedTestSplitError, match="scored more often"):
        quick_run(tmp_path_factory, "scegg", "--set", "epochs=1", "--set", "stage1.iterations=20",
                  "--set", "stage2.iterations=20", tag="leaky_epochs")
