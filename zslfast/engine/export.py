"""The exported model: ``<out>/model.pt``, everything needed to score new features, apart from the
resume state.

A run writes it beside ``results.json`` (atomically). It holds plain tensors, numbers and strings
(readable with ``torch.load(..., weights_only=True)``):

- ``format`` / ``format_version``, ``zslfast_version``, ``method``, the resolved ``config``;
- ``zslfast_sha256``: the checksum of everything else (:func:`zslfast.io.content_hash`), verified
  by :func:`load_model`;
- ``inputs``: what a sample is (``features`` vectors or ``regions`` maps) and its shape;
- ``classes``: the class names, the seen and unseen class ids, the class embeddings the method
  scores with (the dataset's, as its file stores them; each method applies its own transform);
- ``normalization``: the feature normalisation fitted on trainval (``kind``; ``lo`` and ``scale``
  for min-max), which new features must get too;
- ``model``: what the method needs at test time (:attr:`zslfast.engine.MethodResult.model`): the
  networks used at test time and, for generative methods, the final classifiers and the generator
  that refits them for new classes; never the training-only networks (critics, encoders) or
  optimiser state.

New classes (:meth:`zslfast.engine.Method.with_classes`) turn a record into another record whose
classes are the new ones (unseen, ids ``0..K'-1``) followed by the trained seen classes (seen):
:func:`replace_classes` does the bookkeeping every method shares.

:meth:`zslfast.engine.Method.scorer` turns the record back into a :class:`Scorer`, which scores
features against every class. :func:`scorer_metrics` recomputes ZSL T1 and GZSL S/U/H from it:
on the run's own test splits they are the run's reported metrics (tested for every method).
"""
import os

import torch

import zslfast
from zslfast.engine.checkpoint import cpu_copy
from zslfast.errors import ZSLError
from zslfast.eval.metrics import accuracy_from_counts, harmonic_mean, seen_unseen_curve, sharded_counts
from zslfast.io import load_checked, save_checkpoint

MODEL_FILE = "model.pt"
FORMAT = "zslfast-model"
FORMAT_VERSION = 3  # 2: generative models carry their generator (new classes); 3: a content checksum


def model_record(method, config, data, model):
    """The model.pt record of a finished run of ``method`` on ``data`` with the method's exported
    ``model`` (its ``normalization`` entry, the fitted feature normalisation, becomes the record's)."""
    model = dict(model)
    normalization = model.pop("normalization", None) or {"kind": "none"}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "zslfast_version": zslfast.__version__,
            "method": method.name, "config": config,
            "inputs": {"kind": method.inputs, "shape": [int(n) for n in data.features.shape[1:]]},
            "classes": {"names": list(data.class_names), "seen": data.seen_classes.cpu().clone(),
                        "unseen": data.unseen_classes.cpu().clone(), "embeddings": data.attributes.detach().cpu().clone()},
            "normalization": cpu_copy(normalization), "model": cpu_copy(model)}


def save_model(folder, record):
    """Write ``folder/model.pt`` atomically; returns its path."""
    path = os.path.join(folder, MODEL_FILE)
    save_checkpoint(path, record)
    return path


def load_model(path):
    """The record of a model.pt (a run folder or the file), checked, with one clear error for every
    way it can be wrong."""
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(path):
        raise ZSLError(f"{path}: no such file (a run folder holds model.pt when its run finished)")
    record = load_checked(path, "model")
    if record.get("format") != FORMAT:
        raise ZSLError(f"{path}: not a zslfast model file")
    if record.get("format_version") != FORMAT_VERSION:
        raise ZSLError(f"{path}: model format version {record.get('format_version')}, this zslfast reads "
                       f"{FORMAT_VERSION}")
    return record


def replace_classes(record, names, embeddings, keep):
    """A copy of ``record`` whose classes are the candidates (``names``, ``embeddings`` [K', d]: the
    unseen classes, ids 0..K'-1) followed by the trained classes ``keep`` (ids into the record's
    classes: the seen classes, ids K'..K'+len(keep)-1). The model entries are shared, not copied."""
    classes = record["classes"]
    keep = torch.as_tensor(keep, dtype=torch.long)
    new = len(names)
    out = dict(record)
    out["classes"] = {"names": list(names) + [classes["names"][int(i)] for i in keep],
                      "embeddings": torch.cat([embeddings.to(classes["embeddings"].dtype), classes["embeddings"][keep]]),
                      "unseen": torch.arange(new), "seen": torch.arange(new, new + keep.numel()),
                      "trained_ids": keep}
    out["model"] = dict(record["model"])
    return out


class Scorer:
    """Scores of features against every trained class (built by :meth:`Method.scorer`).

    ``gzsl(x) -> [N, K]``: generalized scores (calibration applied), ``zsl(x) -> [N, K]``: ZSL scores
    (``-inf`` for the classes a ZSL prediction cannot be, unless the method's ZSL classifier scores
    all K, as GSMFlow's TMM code does). ``predict(x, setting)`` is their argmax (the lowest class id
    on a tie), or the method's own prediction rule where it has one (``predict_gzsl``)."""

    def __init__(self, gzsl, zsl, predict_gzsl=None):
        self.gzsl, self.zsl, self._predict_gzsl = gzsl, zsl, predict_gzsl

    @torch.no_grad()
    def predict(self, x, setting="gzsl"):
        if setting == "gzsl":
            return self._predict_gzsl(x) if self._predict_gzsl is not None else self.gzsl(x).argmax(1)
        if setting == "zsl":
            return self.zsl(x).argmax(1)
        raise ValueError(f"setting must be gzsl or zsl, got {setting!r}")


def masked(scores, classes):
    """``scores`` [N, K] with every column outside ``classes`` set to -inf."""
    out = torch.full_like(scores, -float("inf"))
    out[:, classes] = scores[:, classes]
    return out


def calibrated(scores, seen, calibration):
    """Calibrated stacking: ``calibration`` subtracted from the seen classes' scores."""
    if not calibration:
        return scores
    scores = scores.clone()
    scores[:, seen] -= calibration
    return scores


def scorer_metrics(scorer, data, batch_size=8192):
    """ZSL T1 and GZSL S/U/H (percent) of a :class:`Scorer` on ``data``'s test splits."""
    k = data.num_classes
    with data.scoring():
        x_u, y_u = data.subset("test_unseen")
        x_s, y_s = data.subset("test_seen")
    x_u, x_s = (x.read() if hasattr(x, "read") else x for x in (x_u, x_s))  # region maps: one tensor each
    t1, u = sharded_counts(lambda x: (scorer.predict(x, "zsl"), scorer.predict(x, "gzsl")), x_u, y_u, k, 2, batch_size)
    (s,) = sharded_counts(lambda x: (scorer.predict(x, "gzsl"),), x_s, y_s, k, 1, batch_size)
    t1, u, s = (accuracy_from_counts(*c) for c in (t1, u, s))
    return {"zsl_t1": 100 * t1, "gzsl_s": 100 * s, "gzsl_u": 100 * u, "gzsl_h": 100 * harmonic_mean(s, u)}


@torch.no_grad()
def scores_curve(gzsl_scores, data, batch_size=1024):
    """The seen–unseen curve and AUSUC (:func:`zslfast.eval.metrics.seen_unseen_curve`) of
    ``gzsl_scores(features as the dataset stores them) -> [n, K]`` on ``data``'s test splits, read
    and scored ``batch_size`` rows at a time (region maps are never all in memory)."""
    def all_scores(split):
        with data.scoring(report=True):
            x, y = data.subset(split)
        blocks = [gzsl_scores(x.read(range(i, min(i + batch_size, len(x)))) if hasattr(x, "read")
                              else x[i:i + batch_size]).cpu() for i in range(0, len(y), batch_size)]
        return (torch.cat(blocks) if blocks else torch.zeros(0, data.num_classes)), y.cpu()

    return seen_unseen_curve(*all_scores("test_seen"), *all_scores("test_unseen"), data.seen_classes,
                             data.unseen_classes)
