"""The Python API for a trained run: load it and score or predict new features.

    import zslfast

    model = zslfast.load("runs/gsmflow")           # a run folder (its model.pt) or the file
    ids = model.predict(features)                   # class ids over every trained class (GZSL)
    top3 = model.predict(features, top_k=3)         # [N, 3], best first
    model.class_names(ids)                          # the ids' class names
    scores = model.scores(features, setting="zsl")  # [N, K]; -inf for classes ZSL cannot predict

``features`` are what the method was trained on, as the dataset stores them (the run's feature
normalisation, fitted on its trainval split, is applied here): vectors [N, D] for the feature
methods, region maps [N, C, R] for SC-EGG. Bad input is refused with one clear
:class:`zslfast.errors.ZSLError` before anything is computed.
"""
from typing import List, Sequence, Union

import torch

from zslfast.data.dataset import apply_normalization
from zslfast.engine.export import load_model
from zslfast.engine.registry import method_class
from zslfast.errors import ZSLError

SETTINGS = ("gzsl", "zsl")


class Model:
    """A trained run's exported model (``model.pt``), ready to score new features.

    Attributes:
        method: the method's registry name.
        config: the run's resolved configuration.
        class_names_all: the names of every trained class, in class-id order.
        embeddings: the class embeddings [K, d] the method scored with.
        seen, unseen: the seen and unseen class ids.
    """

    def __init__(self, record: dict, device: Union[str, torch.device] = "cpu"):
        self.record, self.device = record, torch.device(device)
        self.method, self.config = record["method"], record["config"]
        classes = record["classes"]
        self.class_names_all: List[str] = list(classes["names"])
        self.embeddings: torch.Tensor = classes["embeddings"]
        self.seen, self.unseen = classes["seen"], classes["unseen"]
        self._scorer = method_class(self.method)().scorer(record, self.device)

    def _inputs(self, features) -> torch.Tensor:
        if not isinstance(features, torch.Tensor):
            try:
                features = torch.as_tensor(features)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ZSLError(f"features: not an array of numbers ({exc})") from None
        if not (features.is_floating_point() or features.dtype in (torch.int32, torch.int64)):
            raise ZSLError(f"features: expected real numbers, got {features.dtype}")
        features = features.to(self.device, torch.get_default_dtype())
        regions = method_class(self.method).inputs == "regions"
        if features.dim() != (3 if regions else 2):
            want = "[N, C, R] region maps" if regions else "[N, D] feature vectors"
            raise ZSLError(f"features: expected {want} for {self.method}, got shape {list(features.shape)}")
        expected = self.record.get("inputs", {}).get("shape")
        if expected is not None and list(features.shape[1:]) != list(expected):
            raise ZSLError(f"features: {list(features.shape[1:])} per sample, the model was trained on {expected}")
        if not torch.isfinite(features).all():
            raise ZSLError("features: NaN or infinite values")
        return apply_normalization(self.record["normalization"], features)

    @torch.no_grad()
    def scores(self, features, setting: str = "gzsl") -> torch.Tensor:
        """Scores [N, K] of ``features`` against every trained class: GZSL (calibration applied) or ZSL
        (``-inf`` for the classes a ZSL prediction cannot be)."""
        if setting not in SETTINGS:
            raise ZSLError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
        x = self._inputs(features)
        return (self._scorer.gzsl if setting == "gzsl" else self._scorer.zsl)(x)

    @torch.no_grad()
    def predict(self, features, setting: str = "gzsl", top_k: int = 1) -> torch.Tensor:
        """Predicted class ids: [N] (``top_k`` 1: the method's own prediction rule, as its evaluation
        uses) or [N, top_k], best first."""
        if not isinstance(top_k, int) or not 1 <= top_k <= len(self.class_names_all):
            raise ZSLError(f"top_k must be an integer from 1 to {len(self.class_names_all)}, got {top_k!r}")
        if top_k == 1:
            if setting not in SETTINGS:
                raise ZSLError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
            return self._scorer.predict(self._inputs(features), setting)
        allowed = len(self.class_names_all) if setting == "gzsl" else len(self.unseen)
        if setting == "zsl" and top_k > allowed and self.config.get("classifier", {}).get("zsl_outputs") != "all":
            raise ZSLError(f"top_k {top_k}: ZSL predicts among the {allowed} unseen classes")
        return self.scores(features, setting).topk(top_k, dim=1).indices

    def class_names(self, ids: Union[torch.Tensor, Sequence[int]]) -> list:
        """The class names of class ids [N] (a list) or [N, k] (a list of lists)."""
        ids = torch.as_tensor(ids)
        if ids.dim() > 1:
            return [self.class_names(row) for row in ids]
        return [self.class_names_all[int(i)] for i in ids.reshape(-1)]


def load(run_dir: str, device: Union[str, torch.device] = "cpu") -> Model:
    """The trained model of a finished run (its folder, or its ``model.pt``)."""
    return Model(load_model(run_dir), device)
