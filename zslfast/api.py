"""The Python API: train (:func:`fit`, with :func:`load_dataset` / :func:`from_arrays` data), load a
trained run (:func:`load`) and score or predict new features, among its classes or new ones.

    import zslfast

    run = zslfast.fit("gsmflow", "synthetic", quick=True)   # python -m zslfast.train --method gsmflow --quick

    model = zslfast.load("runs/gsmflow")           # a run folder (its model.pt) or the file
    ids = model.predict(features)                   # class ids over every trained class (GZSL)
    top3 = model.predict(features, top_k=3)         # [N, 3], best first
    model.class_names(ids)                          # the ids' class names
    scores = model.scores(features, setting="zsl")  # [N, K]; -inf for classes ZSL cannot predict

    # new classes, described by attribute vectors (the form of the run's att file: xlsa17 rows)
    zoo = model.with_classes("new_classes.csv")     # or (names, matrix), {name: vector}, att_splits.mat
    zoo.predict(features, setting="zsl")            # among the new classes only; gzsl: new + trained seen

``features`` are what the method was trained on, as the dataset stores them (the run's feature
normalisation, fitted on its trainval split, is applied here): vectors [N, D] for the feature
methods, region maps [N, C, R] for SC-EGG. Bad input is refused with one clear
:class:`zslfast.errors.ZSLError` before anything is computed.

New classes (:meth:`Model.with_classes`) become the unseen classes, ids ``0..K'-1``, followed by the
trained seen classes: ZSL predicts among the new classes, GZSL among them and the seen classes.
Embedding methods (ESZSL, CVC, GRW) score a class from its vector directly; generative methods
(GSMFlow, SC-EGG, TF-VAEGAN, f-CLSWGAN) synthesize features for the new and the seen classes with the
exported generator and train their final classifiers again (seconds at the CPU budgets; see
:meth:`zslfast.engine.GenerativeMethod.with_classes`).
"""
import csv
import os
import time
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from zslfast.data.dataset import apply_normalization
from zslfast.engine.export import load_model
from zslfast.engine.registry import method_class
from zslfast.errors import ZSLError

if TYPE_CHECKING:
    from zslfast.data.dataset import ZSLDataset

SETTINGS = ("gzsl", "zsl")
ArrayLike = Any  # a NumPy array, a torch tensor or nested lists of numbers
ClassesSpec = Union[str, os.PathLike, Tuple[Sequence[str], ArrayLike], Mapping[str, ArrayLike]]


def _float_row(values):
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def read_classes(spec: ClassesSpec, attributes: str = "att") -> Tuple[List[str], torch.Tensor]:
    """(names, embeddings [K', d]) of new classes from ``spec``: a CSV file (one class per row: its
    name, then its vector; an optional header row; the extractor's ``class,split,...`` table too, its
    split column ignored), an ``att_splits.mat`` (every class in it, the
    embedding ``attributes``: the run's), a (names, matrix) pair, or a {name: vector} mapping."""
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        if not os.path.isfile(path):
            raise ZSLError(f"classes {path}: file not found")
        ext = os.path.splitext(path)[1].lower()
        if ext == ".mat":
            from zslfast.data.xlsa17 import read_att_splits

            att = read_att_splits(path, attributes)
            return list(att["class_names"]), att["attributes"]
        if ext != ".csv":
            raise ZSLError(f"classes {path}: expected a .csv (name, vector) or an att_splits.mat")
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ZSLError(f"classes {path}: cannot read it as CSV ({exc})") from None
        if rows and _float_row(rows[0][1:]) is None:
            header, rows = rows[0], rows[1:]
            if len(header) > 1 and header[1].strip().lower() == "split":  # the extractor's classes.csv
                rows = [r[:1] + r[2:] for r in rows]
        names, vectors = [], []
        for line, row in enumerate(rows, 1):
            values = _float_row(row[1:])
            if values is None or not values:
                raise ZSLError(f"classes {path}: row {line} ({row[0]!r}) must be a name followed by numbers")
            names.append(row[0].strip())
            vectors.append(values)
        if len({len(v) for v in vectors}) > 1:
            raise ZSLError(f"classes {path}: rows have different lengths ({sorted({len(v) for v in vectors})})")
        spec = (names, vectors)
    if isinstance(spec, Mapping):
        spec = (list(spec.keys()), [np.asarray(v, dtype=np.float64) for v in spec.values()])
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ZSLError("classes: expected a file, a (names, matrix) pair or a {name: vector} mapping")
    names, matrix = list(spec[0]), spec[1]
    try:
        matrix = torch.as_tensor(np.asarray(matrix, dtype=np.float64) if not isinstance(matrix, torch.Tensor)
                                 else matrix)
    except (TypeError, ValueError) as exc:
        raise ZSLError(f"classes: the vectors are not a matrix of numbers ({exc})") from None
    if matrix.dim() != 2 or matrix.shape[0] != len(names):
        raise ZSLError(f"classes: {len(names)} names need a [{len(names)}, d] matrix, got shape {list(matrix.shape)}")
    return [str(n) for n in names], matrix


class Model:
    """A trained run's exported model (``model.pt``), ready to score new features.

    Attributes:
        method: the method's registry name.
        config: the run's resolved configuration.
        class_names_all: the names of every class it predicts among (the trained ones, or after
            :meth:`with_classes` the new ones then the trained seen ones), in class-id order.
        embeddings: those classes' embeddings [K, d] (``classes`` is the pair).
        seen, unseen: the seen and unseen class ids.
        refit_s: the seconds :meth:`with_classes` took to build this model (0 for a loaded one).
    """

    def __init__(self, record: dict, device: Union[str, torch.device] = "cpu"):
        self.record, self.device = record, torch.device(device)
        self.method, self.config = record["method"], record["config"]
        classes = record["classes"]
        self.class_names_all: List[str] = list(classes["names"])
        self.embeddings: torch.Tensor = classes["embeddings"]
        self.seen, self.unseen = classes["seen"], classes["unseen"]
        self._scorer = method_class(self.method)().scorer(record, self.device)
        self.refit_s: float = 0.0  # seconds :meth:`with_classes` took to build this model

    @property
    def classes(self) -> Tuple[List[str], torch.Tensor]:
        """(names, embeddings [K, d]) of the classes this model predicts among, in class-id order."""
        return self.class_names_all, self.embeddings

    def with_classes(self, classes: ClassesSpec, seed: int = 0) -> "Model":
        """A model that predicts among new classes: ``classes`` (see :func:`read_classes`) become the
        unseen classes (ids 0..K'-1), the trained seen classes follow. A class of the same name and
        vector as a trained seen class is that class (an ``att_splits.mat`` of the training data
        adds its unseen classes only); the same name with another vector is refused. ``seed``: the
        random stream of a generative method's refit."""
        names, emb = read_classes(classes, self.config.get("attributes", "att"))
        width = self.embeddings.shape[1]
        if emb.is_complex() or not (emb.is_floating_point() or emb.dtype in (torch.int32, torch.int64)):
            raise ZSLError(f"classes: expected real numbers, got {emb.dtype}")
        if emb.shape[1] != width:
            raise ZSLError(f"classes: vectors of width {emb.shape[1]}, the model's class embeddings have {width}")
        if not torch.isfinite(emb).all():
            raise ZSLError("classes: NaN or infinite values in the class vectors")
        if len(set(names)) != len(names):
            raise ZSLError("classes: the class names must be unique")
        emb = emb.to(self.embeddings.dtype)
        seen = {self.class_names_all[int(i)]: self.embeddings[int(i)] for i in self.seen}
        keep = []
        for name, vector in zip(names, emb):
            if name in seen:
                if not torch.allclose(vector, seen[name], atol=1e-6):
                    raise ZSLError(f"classes: {name!r} is a trained seen class with another vector; rename the new class")
            else:
                keep.append(name)
        if not keep:
            raise ZSLError("classes: every class given is a trained seen class; nothing new to add")
        index = {n: i for i, n in enumerate(names)}
        t0 = time.perf_counter()
        record = method_class(self.method)().with_classes(self.record, keep, emb[[index[n] for n in keep]],
                                                          self.device, seed)
        model = Model(record, self.device)
        model.refit_s = time.perf_counter() - t0
        return model

    def _inputs(self, features: ArrayLike) -> torch.Tensor:
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
    def scores(self, features: ArrayLike, setting: str = "gzsl", *,
               classes: Optional[ClassesSpec] = None) -> torch.Tensor:
        """Scores [N, K] of ``features`` against every class: GZSL (calibration applied) or ZSL
        (``-inf`` for the classes a ZSL prediction cannot be). ``classes``: new classes for this call
        (:meth:`with_classes`; build that model once when scoring many batches)."""
        if classes is not None:
            return self.with_classes(classes).scores(features, setting)
        if setting not in SETTINGS:
            raise ZSLError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
        x = self._inputs(features)
        return (self._scorer.gzsl if setting == "gzsl" else self._scorer.zsl)(x)

    @torch.no_grad()
    def predict(self, features: ArrayLike, setting: str = "gzsl", top_k: int = 1, *,
                classes: Optional[ClassesSpec] = None) -> torch.Tensor:
        """Predicted class ids: [N] (``top_k`` 1: the method's own prediction rule, as its evaluation
        uses) or [N, top_k], best first. ``classes``: new classes for this call (:meth:`with_classes`,
        whose ids these are; build that model once when predicting many batches)."""
        if classes is not None:
            return self.with_classes(classes).predict(features, setting, top_k)
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


# ---------------------------------------------------------------------------------------- training
def _flat_settings(settings: Mapping, prefix: str = "") -> List[str]:
    """``--set`` items from keyword settings: nested mappings become dotted keys, values JSON (YAML
    reads JSON), so ``gan={"lr": 1e-3}`` is ``--set gan.lr=0.001``."""
    import json

    items = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            items += _flat_settings(value, f"{prefix}{key}.")
        else:
            try:
                items.append(f"{prefix}{key}={json.dumps(value)}")
            except TypeError:
                raise ZSLError(f"setting {prefix}{key}: {type(value).__name__} is not a number, string, "
                               "bool, None or list") from None
    return items


def _arguments(method: str, data, *, root=None, like=None, quick=False, seed=0, out=None, device="cpu",
               select_on_test=False, config=None, progress=True, data_seed=0, pooled_regions=False,
               save_features=False, overwrite=False, settings=None):
    """The training command's parsed arguments for these keyword arguments (its parser checks them)."""
    from zslfast.data.dataset import ZSLDataset
    from zslfast.train import APIParser, build_parser

    name = data.name if isinstance(data, ZSLDataset) else data
    if isinstance(data, ZSLDataset) and "synthetic" in data.info:  # built-in synthetic data: its settings
        name, like = "synthetic", like or data.info["synthetic"]["like"]
        data_seed = data.info["synthetic"]["seed"]
    if not isinstance(name, str):
        raise ZSLError(f"data: expected a dataset name or a ZSLDataset (zslfast.from_arrays), got {type(data).__name__}")
    argv = ["--method", method, "--dataset", name, "--seed", str(seed), "--device", str(device),
            "--data-seed", str(data_seed)]
    for flag, value in (("--data-root", root), ("--like", like), ("--out", out), ("--config", config)):
        if value is not None:
            argv += [flag, os.fspath(value)]
    for flag, on in (("--quick", quick), ("--select-on-test", select_on_test), ("--no-progress", not progress),
                     ("--pooled-regions", pooled_regions), ("--save-features", save_features),
                     ("--overwrite", overwrite)):
        if on:
            argv.append(flag)
    for item in _flat_settings(settings or {}):
        argv += ["--set", item]
    args = build_parser(APIParser).parse_args(argv)
    from zslfast.runfolder import command_line

    args.command = command_line(argv, prog="zslfast.fit, as python -m zslfast.train")
    return args


class Run:
    """A finished training run (:func:`fit`).

    Attributes:
        out: its folder (``results.json``, ``model.pt``, ``checkpoint.pt``).
        results: ``results.json``'s content.
    """

    def __init__(self, out: str, results: dict):
        self.out, self.results = out, results
        self._model = None

    @property
    def metrics(self) -> dict:
        """The reported test metrics (percent)."""
        return self.results["metrics"]

    @property
    def curves(self) -> dict:
        """Per-stage training curves: losses per epoch and the evaluations' scores (``history``)."""
        return self.results["history"]

    @property
    def model(self) -> Model:
        """The trained model (:func:`load` of the run's folder)."""
        if self._model is None:
            self._model = load(self.out)
        return self._model

    def __repr__(self):
        shown = ", ".join(f"{k} {v:.2f}" for k, v in self.metrics.items() if isinstance(v, float))
        return f"Run({self.results['method']} on {self.results['dataset']}: {shown}; {self.out})"


def fit(method: str, data: Union[str, "ZSLDataset"] = "synthetic", *, root: Optional[str] = None,
        like: Optional[str] = None, quick: bool = False, seed: int = 0, out: Optional[str] = None,
        device: str = "cpu", select_on_test: bool = False, config: Optional[str] = None, progress: bool = True,
        data_seed: int = 0, pooled_regions: bool = False, save_features: bool = False, overwrite: bool = False,
        **settings: Any) -> Run:
    """Train ``method`` as ``python -m zslfast.train`` does, with the same settings, checks and outputs.

    Args:
        method: a registered method (``zslfast.engine.METHODS``).
        data: a dataset name (``synthetic``, a benchmark under ``root``, or any xlsa17-format folder
            ``root/NAME``) or a dataset in memory (:func:`from_arrays`, :func:`load_dataset`), whose
            ``name`` picks the settings section (a benchmark's presets, ``synthetic``'s CPU budget,
            the method's defaults for any other name).
        root: the data root (``--data-root``); like: ``--like`` (synthetic data only).
        quick, seed, out, device, select_on_test, config, data_seed, pooled_regions, save_features, overwrite:
            the command's options of the same names (``out`` default: ``runs/<method>_<data>_seed<seed>``, or
            the first free ``-2``, ``-3``; an ``out`` holding another run is refused unless ``overwrite``).
        progress: progress bars on stderr.
        **settings: settings overrides (``--set``); nested sections as mappings, e.g.
            ``epochs=10, gan={"lr": 1e-3}``.

    Returns:
        the :class:`Run` (its results, curves and model). Bad input raises :class:`ZSLError` before
        any training.
    """
    from zslfast.data.dataset import ZSLDataset
    from zslfast.train import run

    args = _arguments(method, data, root=root, like=like, quick=quick, seed=seed, out=out, device=device,
                      select_on_test=select_on_test, config=config, progress=progress, data_seed=data_seed,
                      pooled_regions=pooled_regions, save_features=save_features, overwrite=overwrite,
                      settings=settings)
    given = data if isinstance(data, ZSLDataset) else None
    args.data_given = given is not None and "synthetic" not in given.info  # no data seed to record
    results = run(args, data=given)
    return Run(results["model"] and os.path.dirname(results["model"]), results)


def load_dataset(name: str = "synthetic", *, root: Optional[str] = None, like: Optional[str] = None,
                 method: str = "eszsl", data_seed: int = 0, pooled_regions: bool = False,
                 **settings: Any) -> "ZSLDataset":
    """The dataset ``python -m zslfast.train --method METHOD --dataset NAME`` trains on (feature
    vectors, or region maps for a method that reads them), with the same checks."""
    from zslfast.config import resolve_config
    from zslfast.train import load_data

    args = _arguments(method, name, root=root, like=like, data_seed=data_seed, pooled_regions=pooled_regions,
                      settings=settings)
    config = resolve_config(args.method, args.dataset, None, args.set, False, like=args.like)
    return load_data(args, config)


def from_arrays(features: ArrayLike, labels: ArrayLike, attributes: ArrayLike, *, trainval: ArrayLike,
                test_seen: ArrayLike, test_unseen: ArrayLike, class_names: Optional[Sequence[str]] = None,
                name: str = "own", val: Optional[ArrayLike] = None) -> "ZSLDataset":
    """A dataset from arrays (NumPy or torch): ``features`` [N, D], ``labels`` [N] (class ids
    0..K-1), ``attributes`` [K, d] (one class embedding per row), and the row indices of each split
    (0-based; ``val``: optional rows of validation classes, as xlsa17's ``val_loc``). It is checked
    as any loaded dataset (one clear error). ``name`` picks the settings section (see :func:`fit`)."""
    from zslfast.data.dataset import ZSLDataset

    def tensor(value, what, dtype):
        try:
            t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        except (TypeError, ValueError) as exc:
            raise ZSLError(f"{what}: not an array of numbers ({exc})") from None
        if t.is_complex() or t.dtype == torch.bool:
            raise ZSLError(f"{what}: expected real numbers, got {t.dtype}")
        if dtype == torch.long and t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise ZSLError(f"{what}: expected integers, got fractional values")
        return t.to(dtype)

    attributes = tensor(attributes, "attributes", torch.float32)
    splits = {k: tensor(v, k, torch.long).reshape(-1) for k, v in
              (("trainval", trainval), ("test_seen", test_seen), ("test_unseen", test_unseen), ("val", val))
              if v is not None}
    names = list(class_names) if class_names is not None else [f"class_{i:03d}" for i in range(attributes.shape[0])]
    return ZSLDataset(name=name, features=tensor(features, "features", torch.float32),
                      labels=tensor(labels, "labels", torch.long).reshape(-1), attributes=attributes,
                      class_names=names, splits=splits, source=f"arrays ({name})")
