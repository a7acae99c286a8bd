"""The exported model (``<out>/model.pt``, zslfast.engine.export) of every golden run: read back with
``weights_only=True``, turned into a Scorer by its method, it scores the run's own test splits to
exactly the metrics the run reported (for GRW: the last trained task's S and U), and it holds no
training-only state (optimisers, critics, encoders)."""
import os
from dataclasses import replace

import pytest
import torch

from tests.quick_runs import quick_run, quick_run_folder, run_params
from zslfast import golden
from zslfast.data import make_synthetic
from zslfast.data.continual import ContinualSplit
from zslfast.data.dataset import apply_normalization
from zslfast.data.synthetic_regions import make_synthetic_regions
from zslfast.engine import method_class
from zslfast.engine.export import MODEL_FILE, load_model, scorer_metrics
from zslfast.errors import ZSLError
from zslfast.eval.metrics import continual_task_metrics
from zslfast.engine.continual import task_setting

RUNS = golden.RUNS + [("gsmflow_select_on_test", ["--method", "gsmflow", "--select-on-test", "--set", "eval_every=2"])]


def _run(name, args, factory):
    extra = tuple(args[2:])
    tag = "on_test" if "--select-on-test" in extra else "clean"  # the cache entry other tests use too
    res, _ = quick_run(factory, args[1], *extra, tag=tag)
    return res, os.path.join(quick_run_folder(factory, args[1], *extra, tag=tag), MODEL_FILE)


def _test_data(method, record):
    """The quick run's dataset with the record's feature normalisation applied, as new data gets it."""
    if method_class(method).inputs == "regions":
        return make_synthetic_regions(seed=0)  # region maps: the scorer reads them itself
    data = make_synthetic(seed=0)
    return replace(data, features=apply_normalization(record["normalization"], data.features))


@pytest.mark.parametrize("name,args", run_params(RUNS))
def test_the_exported_model_scores_the_reported_metrics(name, args, tmp_path_factory):
    res, path = _run(name, args, tmp_path_factory)
    assert res["model"] == path
    record = load_model(os.path.dirname(path))
    assert record["method"] == args[1] and record["config"] == res["config"]
    scorer = method_class(args[1])().scorer(record)
    data = _test_data(args[1], record)
    if res["setting"].startswith("continual"):  # the model after the last trained task: its S and U
        s, t = task_setting(data, res["config"])
        split = ContinualSplit(data.labels, data.num_classes, s, t, **res["config"]["split"])
        task = split.task(split.trained_tasks[-1])
        got = continual_task_metrics(lambda x: scorer.predict(x, "gzsl"), data.features, data.labels,
                                     task.test_seen, task.test_unseen)
        want = res["per_task"][-1]
        assert (got["S"], got["U"]) == pytest.approx((want["S"], want["U"]), abs=1e-9)
        return
    metrics = scorer_metrics(scorer, data)
    if res["config"].get("transductive"):
        want = {k: v for k, v in res["metrics"].items() if not k.startswith("inductive_")}
    else:
        want = res["metrics"]
    assert metrics == pytest.approx(want, abs=1e-9), (metrics, want)


@pytest.mark.parametrize("method", ["gsmflow", "scegg"])
def test_the_export_holds_only_what_scoring_needs(method, tmp_path_factory):
    """No optimiser state, no training-only network: the networks that score (SC-EGG's attention net
    and decoder; GSMFlow's classifiers read the features) and the generator that refits the
    classifiers for new classes (the flow; SC-EGG's G and feedback, its decoder shared), never a
    critic, an encoder or SC-EGG's distillation head; far smaller than the training checkpoint."""
    res, path = _run(method, ["--method", method], tmp_path_factory)
    record = load_model(path)
    model = record["model"]
    assert set(model["networks"]) == ({"net", "Dec", "G", "Fb"} if method == "scegg" else {"flow"})
    assert set(model["classifiers"]) == {"gzsl", "zsl"}
    # the checkpoint holds the trained model (GSMFlow: the flow; SC-EGG: besides, the critic, the
    # encoder and the head): the export is at most that plus the final classifiers
    classifiers = sum(t.numel() * t.element_size() for c in model["classifiers"].values() for t in c.values())
    size, checkpoint = os.path.getsize(path), os.path.getsize(res["checkpoint"])
    assert size < checkpoint + classifiers + 64 * 1024
    if method == "scegg":
        assert size < checkpoint


def test_a_missing_or_foreign_model_file_is_one_clear_error(tmp_path):
    with pytest.raises(ZSLError, match="no such file"):
        load_model(str(tmp_path))
    torch.save({"weights": torch.zeros(2)}, tmp_path / MODEL_FILE)
    with pytest.raises(ZSLError, match="not a file written by this zslfast"):
        load_model(str(tmp_path))
    (tmp_path / MODEL_FILE).write_bytes(b"truncated")
    with pytest.raises(ZSLError, match="cannot read it"):
        load_model(str(tmp_path))
