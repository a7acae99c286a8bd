"""The one in-memory form of a ZSL dataset, with its checks, normalisation and validation split."""
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch

from zslfast.errors import ZSLError

SPLITS_REQUIRED = ("trainval", "test_seen", "test_unseen")
SPLITS_OPTIONAL = ("train", "val")
TEST_SPLITS = ("test_seen", "test_unseen")


class SealedTestSplitError(RuntimeError):
    """A sealed test split was read outside the run's final scoring (a test leak in the code)."""


class SealedSplits(Mapping):
    """A dataset's splits with the test splits sealed (:meth:`ZSLDataset.sealed`).

    A read-only mapping (not a ``dict`` subclass, whose C fast paths ``dict(s)``, ``{**s}``,
    ``s.get`` and ``s.copy`` would skip an overridden ``__getitem__``): every public way to reach a
    test split's indices goes through ``__getitem__``, which raises :class:`SealedTestSplitError`,
    except inside one of the run's ``scorings`` scoring windows (:meth:`scoring`). Split names,
    sizes and the unseen classes (the class partition, which ZSL gives every method) stay readable.
    """

    __slots__ = ("__splits", "__reason", "__left", "__open", "unseen_classes", "sizes")

    def __init__(self, splits, reason, scorings, unseen_classes):
        self.__splits = dict(splits)
        self.__reason, self.__left, self.__open = reason, scorings, False
        self.unseen_classes = unseen_classes
        self.sizes = {k: int(v.numel()) for k, v in self.__splits.items()}

    def __getitem__(self, name):
        if name in TEST_SPLITS and not self.__open:
            raise SealedTestSplitError(f"the test split '{name}' was read during {self.__reason} outside its "
                                       "final scoring: training and model selection must use trainval (and its "
                                       "validation view) only")
        return self.__splits[name]

    def __contains__(self, name):
        return name in self.__splits

    def __iter__(self):
        return iter(self.__splits)

    def __len__(self):
        return len(self.__splits)

    def __repr__(self):
        return f"SealedSplits({self.sizes}, scorings left: {self.__left})"

    @contextlib.contextmanager
    def scoring(self, report=False):
        """A window in which the test splits can be read: one of the run's scorings, or with
        ``report`` (plots of the test data) only once every scoring was used."""
        if report and self.__left:
            raise SealedTestSplitError(f"the test splits were read for a report during {self.__reason} before "
                                       "the final scoring")
        if not report:
            if self.__left <= 0:
                raise SealedTestSplitError(f"the test splits were scored more often than {self.__reason} "
                                           "reports: something was chosen or trained on them")
            self.__left -= 1
        self.__open = True
        try:
            yield
        finally:
            self.__open = False

    def _unlabelled(self, name):
        return self.__splits[name]


NORMALIZATIONS = ("none", "minmax", "l2")


def fit_normalization(trainval_features, method="none"):
    """The feature normalisation ``method`` fitted on trainval's features: ``{"kind": method}``, with
    ``lo`` and ``scale`` per dimension for ``minmax`` (``scale`` is max − min, 1 for a constant
    dimension). Apply it with :func:`apply_normalization`, to the dataset's features and to any new
    ones."""
    if method not in NORMALIZATIONS:
        raise ZSLError(f"feature normalisation must be one of {', '.join(NORMALIZATIONS)}, got {method!r}")
    stats = {"kind": method}
    if method == "minmax":
        lo, hi = trainval_features.min(0).values, trainval_features.max(0).values
        stats.update(lo=lo, scale=torch.where(hi > lo, hi - lo, torch.ones_like(hi)))
    return stats


def apply_normalization(stats, features):
    """``features`` normalised by fitted ``stats`` (:func:`fit_normalization`; None: unchanged)."""
    kind = (stats or {}).get("kind", "none")
    if kind == "minmax":
        return (features - stats["lo"].to(features.device)) / stats["scale"].to(features.device)
    if kind == "l2":
        return torch.nn.functional.normalize(features, dim=1)
    return features


@dataclass
class ZSLDataset:
    """Features, labels, class embeddings and splits of one dataset (all indices 0-based).

    Attributes:
        name: dataset name (e.g. "CUB", "synthetic").
        features: float32 [N, D] visual features.
        labels: int64 [N] class ids in [0, C).
        attributes: float32 [C, d] class embeddings (attributes or sentence embeddings).
        class_names: C names.
        splits: int64 index tensors: "trainval", "test_seen", "test_unseen" and, where the source
            has them, "train" and "val" (xlsa17's older class-disjoint split; see
            :meth:`validation_split`).
        source: where the data came from (a path, or a description of the generator).
        normalization: the fitted feature normalisation of a :meth:`normalized` copy
            (:func:`fit_normalization`), which new features must get too; None before.
    """

    name: str
    features: torch.Tensor
    labels: torch.Tensor
    attributes: torch.Tensor
    class_names: list
    splits: dict
    source: str = ""
    info: dict = field(default_factory=dict)
    normalization: dict = None

    def __post_init__(self):
        self.check()

    # ------------------------------------------------------------------ checks
    def _fail(self, problem):
        raise ZSLError(f"{self.source or self.name}: {problem}")

    def check(self):
        """Refuse inconsistent data with one message naming the source and the problem (a copy of a
        sealed dataset is checked against the indices its seal holds)."""
        f, y, a = self.features, self.labels, self.attributes
        self._check_features()
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            self._fail(f"labels must be integer class ids, got dtype {y.dtype}")
        if not a.is_floating_point() or a.is_complex():
            self._fail(f"class embeddings must be real floating-point numbers, got dtype {a.dtype}")
        if y.dim() != 1 or y.shape[0] != f.shape[0]:
            self._fail(f"labels must be a vector with one entry per feature row ({f.shape[0]}), "
                       f"got shape {tuple(y.shape)}")
        if a.dim() != 2:
            self._fail(f"class embeddings must be a 2-D [C, d] matrix, got shape {tuple(a.shape)}")
        if len(self.class_names) != a.shape[0]:
            self._fail(f"{len(self.class_names)} class names for {a.shape[0]} classes")
        if not torch.isfinite(a).all():
            self._fail(f"class embeddings contain {int((~torch.isfinite(a)).sum())} NaN/inf values")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= a.shape[0]):
            self._fail(f"labels must lie in [0, {a.shape[0]}) (one per class embedding), "
                       f"got range [{int(y.min())}, {int(y.max())}]")
        splits = _indices(self.splits)
        for name in SPLITS_REQUIRED:
            if name not in splits:
                self._fail(f"missing split '{name}'")
        n = f.shape[0]
        for name, idx in splits.items():
            if idx.dim() != 1:
                self._fail(f"split '{name}' must be a vector of indices")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                self._fail(f"split '{name}' points outside the {n} samples "
                           f"(range [{int(idx.min())}, {int(idx.max())}])")
            if torch.unique(idx).numel() != idx.numel():
                self._fail(f"split '{name}' lists some samples more than once")
        for name in SPLITS_REQUIRED:
            if splits[name].numel() == 0:
                self._fail(f"split '{name}' is empty")
        for i, a_name in enumerate(SPLITS_REQUIRED):
            for b_name in SPLITS_REQUIRED[i + 1:]:
                both = _intersect(splits[a_name], splits[b_name])
                if both:
                    self._fail(f"splits '{a_name}' and '{b_name}' overlap in {both} samples")
        seen, unseen = self.seen_classes, torch.unique(y[splits["test_unseen"]])
        overlap = _intersect(seen, unseen)
        if overlap:
            self._fail(f"{overlap} classes are both seen (in trainval) and unseen (in test_unseen)")
        extra = torch.unique(y[splits["test_seen"]])
        if (~torch.isin(extra, seen)).any():
            self._fail("test_seen contains classes that have no trainval samples")

    def _check_features(self):
        f = self.features
        if not f.is_floating_point() or f.is_complex():
            self._fail(f"features must be real floating-point numbers, got dtype {f.dtype}")
        if f.dim() != 2:
            self._fail(f"features must be a 2-D [N, D] matrix, got shape {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            self._fail(f"features contain {int((~torch.isfinite(f)).sum())} NaN/inf values")

    # ------------------------------------------------------------------ views
    @property
    def seen_classes(self):
        """Sorted class ids with trainval samples."""
        return torch.unique(self.labels[self.splits["trainval"]])

    @property
    def unseen_classes(self):
        """Sorted class ids of the unseen test samples (known to every method: ZSL gives the unseen
        classes' embeddings, and a sealed dataset keeps this partition readable)."""
        if isinstance(self.splits, SealedSplits):
            return self.splits.unseen_classes.to(self.labels.device)
        return torch.unique(self.labels[self.splits["test_unseen"]])

    @property
    def num_classes(self):
        return self.attributes.shape[0]

    @property
    def feature_dim(self):
        return self.features.shape[1]

    @property
    def attribute_dim(self):
        return self.attributes.shape[1]

    def subset(self, split):
        """(features, labels) of one split."""
        idx = self.splits[split]
        return self.features[idx], self.labels[idx]

    def split_labels(self, split):
        """The labels of one split (no feature copy)."""
        return self.labels[self.splits[split]]

    def unlabelled(self, split):
        """The features of one split without its labels, readable while the dataset is sealed: what
        a transductive method may use of the unseen test images, and what an evaluation maps
        before its scoring reads the labels."""
        return self.features[_indices(self.splits)[split]]

    def scoring(self, report=False):
        """A context in which the test splits can be read: on a sealed dataset one of the run's
        final scorings (or, with ``report``, a plot of test data once every scoring was used);
        elsewhere (a validation view, ``--select-on-test``) it changes nothing."""
        return self.splits.scoring(report) if isinstance(self.splits, SealedSplits) else contextlib.nullcontext()

    def to(self, device):
        """A copy with features, labels and class embeddings on ``device`` (splits stay on CPU)."""
        return replace(self, features=self.features.to(device), labels=self.labels.to(device),
                       attributes=self.attributes.to(device))

    def split_sizes(self):
        """{split: number of samples} (readable while sealed)."""
        return {k: int(v.numel()) for k, v in _indices(self.splits).items()}

    def summary(self):
        s = self.split_sizes()
        return (f"{self.name}: {self.features.shape[0]} samples × {self.feature_dim}-d features, "
                f"{self.num_classes} classes ({len(self.seen_classes)} seen / {len(self.unseen_classes)} unseen), "
                f"{self.attribute_dim}-d class embeddings; splits {s}")

    @contextlib.contextmanager
    def sealed(self, reason="model selection", scorings=0):
        """Within this block the test splits of this dataset and of every copy made from it
        (``to``, ``normalized``, ``replace``) cannot be read (:class:`SealedTestSplitError`), except in
        ``scorings`` scoring windows (:meth:`scoring`). A validation-selection run is sealed from
        its start to its end with as many scorings as it reports test evaluations; inside an
        already sealed block this is a no-op."""
        if isinstance(self.splits, SealedSplits):
            yield self
            return
        original = self.splits
        self.splits = SealedSplits(original, reason, scorings, self.unseen_classes)
        try:
            yield self
        finally:
            self.splits = original

    # ------------------------------------------------------------------ transforms
    def normalized(self, method="none"):
        """A copy with normalised features, statistics fitted on trainval only.

        ``none``; ``minmax``: per dimension to [0, 1] by trainval's min and max (test values may
        fall outside, as in the methods' original code); ``l2``: each sample to unit length.
        """
        trainval = self.features[self.splits["trainval"]] if method == "minmax" else None  # only min-max fits
        stats = fit_normalization(trainval, method)
        return replace(self, features=apply_normalization(stats, self.features).contiguous(),
                       info={**self.info, "normalization": method}, normalization=stats)

    def without_classes(self, classes):
        """A copy without the classes ``classes`` (ids or names): their samples leave every split, the
        remaining classes are renumbered in order (names and embeddings follow). To train a model
        that never saw a class, then add that class at predict time from its vector
        (:meth:`zslfast.Model.with_classes`)."""
        index = {n: i for i, n in enumerate(self.class_names)}
        ids = []
        for c in classes:
            if isinstance(c, str) and c not in index:
                raise ZSLError(f"{self.name}: no class named {c!r}")
            ids.append(index[c] if isinstance(c, str) else int(c))
        drop = torch.zeros(self.num_classes, dtype=torch.bool)
        drop[torch.as_tensor(ids, dtype=torch.long)] = True
        keep_classes = torch.nonzero(~drop).flatten()
        new_id = torch.full((self.num_classes,), -1, dtype=torch.long)
        new_id[keep_classes] = torch.arange(keep_classes.numel())
        labels = self.labels.cpu()
        rows = torch.nonzero(~drop[labels]).flatten()
        splits = {name: torch.searchsorted(rows, idx[~drop[labels[idx]]]) for name, idx in self.splits.items()}
        dev = self.features.device
        return replace(self, features=self.features[rows.to(dev)], labels=new_id[labels[rows]].to(self.labels.device),
                       attributes=self.attributes[keep_classes.to(self.attributes.device)],
                       class_names=[self.class_names[int(i)] for i in keep_classes], splits=splits,
                       info={**self.info, "without_classes": [self.class_names[i] for i in sorted(set(ids))]})

    def official_validation_classes(self):
        """The seen classes of the source's own ``val`` split (xlsa17's ``val_loc``), which
        :meth:`validation_split` holds out instead of a random ``unseen_fraction``; None without one."""
        if "val" not in self.splits or not self.splits["val"].numel():
            return None
        seen = self.seen_classes
        official = torch.unique(self.labels[self.splits["val"]])
        official = official[torch.isin(official, seen)]
        return official if 0 < official.numel() < seen.numel() else None

    def validation_split(self, seed=0, unseen_fraction=0.2, seen_test_fraction=0.2):
        """A dataset for model selection built from trainval only: the test data is never touched.

        The seen classes are split class-disjointly into "train" classes and "validation-unseen"
        classes: xlsa17's official ``val_loc`` classes where the source provides them (only its
        class partition is used; its samples are taken from trainval, because ``train_loc`` /
        ``val_loc`` are not subsets of trainval and include test images), otherwise a seeded random
        ``unseen_fraction`` of the seen classes. A seeded ``seen_test_fraction`` of the train-class
        samples is held out as validation-seen test data. The result has the usual split names, so
        any method trains and evaluates on it exactly as on the real splits. The view holds only the
        trainval rows (features and labels re-indexed), so no test sample is reachable from it.
        """
        seen = self.seen_classes
        tv = self.splits["trainval"]
        g = torch.Generator().manual_seed(seed)
        val_classes = self.official_validation_classes()
        if val_classes is None:
            k = max(1, round(unseen_fraction * seen.numel()))
            if seen.numel() - k < 2:
                raise ZSLError(f"{self.name}: validation.unseen_fraction = {unseen_fraction:g} holds out {k} of the "
                               f"{seen.numel()} seen classes, leaving {seen.numel() - k} to train on (at least 2 are "
                               "needed); lower it, e.g. --set validation.unseen_fraction=0.2")
            val_classes = seen[torch.randperm(seen.numel(), generator=g)[:k]].sort().values
        in_val = torch.isin(self.labels[tv], val_classes)
        val_unseen = tv[in_val]
        pool = tv[~in_val]
        train, test = stratified_holdout(pool, self.labels[pool], seen_test_fraction, g)
        rows = tv.sort().values
        splits = {name: torch.searchsorted(rows, idx)
                  for name, idx in (("trainval", train), ("test_seen", test), ("test_unseen", val_unseen))}
        rows_dev = rows.to(self.features.device)
        return replace(self, name=f"{self.name}[validation]", features=self.features[rows_dev],
                       labels=self.labels[rows_dev], splits=splits,
                       info={**self.info, "validation": {"seed": seed, "val_classes": val_classes.tolist()}})


def _indices(splits):
    """Every split's indices, the sealed ones included: for the dataset's own checks, sizes and
    unlabelled reads, never handed to a method."""
    if isinstance(splits, SealedSplits):
        return {k: splits._unlabelled(k) for k in splits}
    return splits


def _intersect(a, b):
    return int(torch.isin(a, b).sum())


def stratified_holdout(indices, labels, fraction, generator):
    """Split ``indices`` into (kept, held_out), holding out round(fraction·n_c) random samples of each
    class c but always keeping at least one. Both parts are returned sorted."""
    perm = torch.randperm(indices.numel(), generator=generator)
    indices, labels = indices[perm], labels[perm]
    order = torch.argsort(labels, stable=True)  # random order within each class
    indices, labels = indices[order], labels[order]
    _, counts = torch.unique_consecutive(labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.numel()) - torch.repeat_interleave(starts, counts)
    n_out = torch.minimum(torch.round(counts * fraction).long(), counts - 1)
    out = rank < torch.repeat_interleave(n_out, counts)
    return indices[~out].sort().values, indices[out].sort().values
