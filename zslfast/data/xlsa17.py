"""Reader for the xlsa17 benchmark format (Xian et al., "Zero-Shot Learning — The Good, the Bad and
the Ugly"): ``<root>/<DATASET>/res101.mat`` and ``att_splits.mat``.

Traps of the original files handled here: locations are 1-based **uint16** (cast before any
arithmetic); some files lack ``train_loc``/``val_loc``/``original_att``/``allclasses_names``;
``train_loc ∪ val_loc ≠ trainval_loc``; AWA's ``att`` has tiny negative values (kept as they are).
"""
import os
import re

import numpy as np
import torch

from zslfast.data.arrays import integer_labels, read_mat
from zslfast.data.dataset import ZSLDataset
from zslfast.errors import ZSLError

DATASETS = ("AWA1", "AWA2", "CUB", "SUN", "APY", "FLO")
ATTRIBUTE_SOURCES = ("att", "original_att", "sent")
LOCATIONS = {"trainval": "trainval_loc", "test_seen": "test_seen_loc", "test_unseen": "test_unseen_loc",
             "train": "train_loc", "val": "val_loc"}
REQUIRED_LOCATIONS = ("trainval", "test_seen", "test_unseen")
# a dataset folder name that --dataset accepts for the user's own data (no path separators)
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def dataset_name(name):
    """The canonical name of an xlsa17 dataset (case-insensitive), or a ZSLError."""
    for known in DATASETS:
        if str(name).upper() == known:
            return known
    raise ZSLError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} (or 'synthetic')")


def mat_locations(mat, path, n=None):
    """0-based int64 split indices from the ``*_loc`` fields (1-based, usually uint16)."""
    out = {}
    for split, key in LOCATIONS.items():
        if key not in mat:
            if split in REQUIRED_LOCATIONS:
                raise ZSLError(f"{path}: missing field '{key}'")
            continue
        loc = np.asarray(mat[key]).reshape(-1).astype(np.int64)  # uint16 would wrap on 0 - 1
        if loc.size and loc.min() < 1:
            raise ZSLError(f"{path}: '{key}' must hold 1-based sample locations, found {loc.min()}")
        if n is not None and loc.size and loc.max() > n:
            raise ZSLError(f"{path}: '{key}' points to sample {loc.max()} but there are only {n} samples")
        out[split] = torch.from_numpy(loc - 1)
    return out


def _class_names(mat, num_classes):
    if "allclasses_names" not in mat:
        return [f"class_{i:03d}" for i in range(num_classes)]
    return [str(np.asarray(v).reshape(-1)[0]) for v in np.asarray(mat["allclasses_names"]).reshape(-1)]


def _matrix(mat, key, path):
    if key not in mat:
        raise ZSLError(f"{path}: missing field '{key}'")
    m = np.asarray(mat[key])
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.number):
        raise ZSLError(f"{path}: field '{key}' must be a numeric matrix, got shape {m.shape} dtype {m.dtype}")
    if np.issubdtype(m.dtype, np.complexfloating):
        raise ZSLError(f"{path}: field '{key}' holds complex numbers ({m.dtype}); expected real values")
    return m


def warn_about_attributes(att, labels, path, attributes, has_names):
    """Warnings (not errors: the data may be meant so) for a class-embedding matrix that looks
    stored the wrong way round, or not normalised where xlsa17's ``att`` is. ``att``: [C, d] as
    read; ``labels``: the 1-based class ids of the samples."""
    import warnings

    used = int(labels.max()) if labels.size else 0
    if not has_names and att.shape[0] != att.shape[1] and used == att.shape[1] and used < att.shape[0]:
        warnings.warn(f"{path}: '{attributes}' looks transposed: it is stored {used} × {att.shape[0]} and the labels "
                      f"name {used} classes, but xlsa17 stores it attributes × classes ({att.shape[0]} × {used}), "
                      f"so it would be read as {att.shape[0]} classes: save its transpose", stacklevel=3)
    if attributes == "att" and att.numel():
        norms = att.norm(dim=1)
        typical = float(norms.median())
        if not 1 / 3 <= typical <= 3:  # raw 0-100 attribute scores, say (the built-in data's are near 1)
            warnings.warn(f"{path}: the rows of 'att' are far from unit length (L2 norms {float(norms.min()):.3g} to "
                          f"{float(norms.max()):.3g}); xlsa17's 'att' is L2-normalised per class (its raw values "
                          "are 'original_att'): divide each class's attributes by their L2 norm, or store the raw "
                          "values as 'original_att' and choose them with --set attributes=original_att",
                          stacklevel=3)


def read_att_splits(path, attributes="att", sent_path=None):
    """Class embeddings, class names and split locations of an ``att_splits.mat`` file.

    Returns a dict with ``attributes`` (float32 [C, d]), ``class_names``, ``splits`` (0-based int64)
    and ``num_samples`` (the largest location, a lower bound on N). ``attributes`` chooses the
    class embedding: ``att`` (L2-normalised per class), ``original_att``, or ``sent`` (CUB's 1024-d
    sentence embeddings from ``sent_splits.mat``, at ``sent_path`` or beside ``path``).
    """
    if attributes not in ATTRIBUTE_SOURCES:
        raise ZSLError(f"attributes must be one of {', '.join(ATTRIBUTE_SOURCES)}, got {attributes!r}")
    mat = read_mat(path, "class attributes and splits")
    splits = mat_locations(mat, path)
    if attributes == "sent":
        sent_path = sent_path or os.path.join(os.path.dirname(path), "sent_splits.mat")
        emb_mat, emb_path = read_mat(sent_path, "sentence embeddings"), sent_path
        # sent_splits.mat also carries train_loc/val_loc, which some att_splits copies lack
        for split, loc in mat_locations(emb_mat, emb_path).items():
            splits.setdefault(split, loc)
        att = _matrix(emb_mat, "att", emb_path)
    else:
        emb_mat, emb_path = mat, path
        att = _matrix(mat, attributes, path)
    att = torch.from_numpy(att.T.astype(np.float32).copy())  # stored d × C
    names = _class_names(mat, att.shape[0])
    if len(names) != att.shape[0]:
        raise ZSLError(f"{path}: {len(names)} class names but {att.shape[0]} classes in '{attributes}' of {emb_path}")
    n = max(int(v.max()) + 1 for v in splits.values() if v.numel())
    return {"attributes": att, "class_names": names, "splits": splits, "num_samples": n,
            "has_names": "allclasses_names" in mat}


def load_xlsa17(root, name, attributes="att", features_file="res101.mat", labels_file=None):
    """Load ``<root>/<name>/`` in xlsa17 format as a :class:`ZSLDataset`.

    Args:
        root: the folder holding one sub-folder per dataset.
        name: AWA1, AWA2, CUB, SUN, APY or FLO (case-insensitive).
        attributes: ``att`` (default), ``original_att``, or ``sent`` (CUB sentence embeddings).
        features_file: the features file inside the dataset folder, or any path
            (:func:`read_xlsa17_folder`); ``labels_file``: where its labels come from, when not in it.

    Raises:
        ZSLError: naming the file and the problem, for an unknown name, a missing file or field,
            wrong shapes, NaN/inf, labels or locations out of range, or overlapping splits.
    """
    name = dataset_name(name)
    return read_xlsa17_folder(os.path.join(root, name), attributes, features_file, name=name, labels_file=labels_file)


def read_xlsa17_folder(folder, attributes="att", features_file="res101.mat", name=None, labels_file=None):
    """Read one xlsa17-format folder (``res101.mat`` + ``att_splits.mat``) whatever its name.

    ``features_file`` (a path inside the folder, or any path) replaces ``res101.mat``: a ``.npy``,
    ``.npz``, ``.pt``, HDF5 or ``.mat`` file of :func:`zslfast.data.arrays.read_arrays`, its rows in the
    order the split locations of ``att_splits.mat`` index. Its labels come from the file itself when
    it holds them, else from ``labels_file`` (:func:`zslfast.data.arrays.read_labels`), else from the
    folder's ``res101.mat``."""
    name = name or os.path.basename(os.path.normpath(folder))
    if not os.path.isdir(folder):
        raise ZSLError(f"{folder}: dataset folder not found (expected res101.mat and att_splits.mat in it)")
    att_path = os.path.join(folder, "att_splits.mat")
    meta = read_att_splits(att_path, attributes)
    feat_path = os.path.join(folder, features_file)
    res101 = os.path.join(folder, "res101.mat")
    if features_file == "res101.mat" and labels_file is None:
        mat = read_mat(feat_path, "image features and labels")
        feats = _matrix(mat, "features", feat_path)
        labels = np.asarray(mat.get("labels", np.empty((0,)))).reshape(-1)
        if "labels" not in mat:
            raise ZSLError(f"{feat_path}: missing field 'labels'")
        labels_path, shape = feat_path, mat["features"].shape
    else:
        from zslfast.data.arrays import read_arrays, read_labels

        feats, labels = read_arrays(feat_path, "--features")
        shape = tuple(feats.shape)
        if feats.dim() != 2:
            raise ZSLError(f"--features {feat_path}: expected feature vectors [N, D], got shape {list(shape)} "
                           "(region maps are read from a region-feature file; see docs/data.md)")
        feats, labels_path = feats.numpy(), feat_path
        if labels_file is not None:
            labels, labels_path = read_labels(labels_file), labels_file
        elif labels is None:
            if not os.path.isfile(res101):
                raise ZSLError(f"--features {feat_path} holds no labels and {folder} has no res101.mat to take them "
                               "from: give --labels FILE (0-based class ids, one per sample), or save both together "
                               "(e.g. numpy.savez(FILE, features=X, labels=y))")
            mat = read_mat(res101, "labels")
            if "labels" not in mat:
                raise ZSLError(f"{res101}: missing field 'labels'")
            labels, labels_path = integer_labels(mat["labels"], res101) - 1, res101
        labels = np.asarray(labels).reshape(-1) + 1  # 1-based below, as res101.mat stores them
    # xlsa17 stores features as D × N; accept N × D too, decided by the label count.
    if feats.shape[1] == labels.size and feats.shape[0] != labels.size:
        feats = feats.T
    if feats.shape[0] != labels.size:
        raise ZSLError(f"{feat_path}: 'features' has shape {shape} but there are {labels.size} labels"
                       + (f" (from {labels_path})" if labels_path != feat_path else ""))
    labels = integer_labels(labels, labels_path)
    num_classes = meta["attributes"].shape[0]
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        base = 1 if labels_path.lower().endswith(".mat") else 0
        raise ZSLError(f"{labels_path}: labels must be {base}-based class ids in [{base}, {num_classes - 1 + base}] "
                       f"(the classes of {att_path}), got range [{labels.min() - 1 + base}, {labels.max() - 1 + base}]")
    if meta["num_samples"] > labels.size:
        raise ZSLError(f"{att_path}: split locations go up to {meta['num_samples']} but {feat_path} has "
                       f"{labels.size} samples")
    warn_about_attributes(meta["attributes"], labels, att_path, attributes, meta["has_names"])
    features = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    return ZSLDataset(name=name, features=features, labels=torch.from_numpy(labels - 1),
                      attributes=meta["attributes"], class_names=meta["class_names"], splits=meta["splits"],
                      source=feat_path, info={"attributes": attributes, "format": "xlsa17"})
