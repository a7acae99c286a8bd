"""Arrays from files: the image features (and labels) a user brings, in whatever common format they
are saved in. One reader for every command that takes a ``--features`` / ``--labels`` file
(:mod:`zslfast.train`, :mod:`zslfast.predict`).

| extension | what it holds |
|---|---|
| ``.npy`` | one array |
| ``.npz`` | ``features`` (and optionally ``labels``), or one array |
| ``.pt`` | a tensor, or a dict with ``features`` (and optionally ``labels``) |
| ``.h5`` / ``.hdf5`` | datasets ``features`` (or region maps ``feature_map`` [N, C, H, W]) and optionally ``labels`` |
| ``.mat`` | a ``res101.mat``-style file: ``features`` (D × N as xlsa17 stores it, or N × D) and ``labels`` |

Labels are 0-based class ids (the rows of the class-embedding matrix) everywhere except in ``.mat``
files, where they are 1-based as in xlsa17's ``res101.mat``; :func:`read_arrays` returns them
0-based.

The low-level readers the dataset readers share live here too (``read_mat`` with its v7.3
explanation, ``integer_labels``, ``require_h5py``), so that this module imports no other data
module and :mod:`zslfast.data.xlsa17` and :mod:`zslfast.data.regions` can import it.
"""
import os

import numpy as np
import scipy.io
import torch

from zslfast.errors import ZSLError

EXTENSIONS = (".npy", ".npz", ".pt", ".h5", ".hdf5", ".mat")


def require_h5py():
    try:
        import h5py
    except ImportError:
        raise ZSLError("region features need h5py: pip install h5py (or pip install \"zslfast[regions]\")") from None
    return h5py


def read_mat(path, what):
    """scipy.io.loadmat with a clear error for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise ZSLError(f"{path}: file not found ({what}); see the README's 'Getting the real data' for where xlsa17 comes from")
    if _is_hdf5_mat(path):
        raise ZSLError(f"{path}: a MATLAB v7.3 (HDF5) .mat file, which zslfast's reader (scipy) cannot read; save it "
                       "again from MATLAB with save(FILE, ..., '-v7'), or in Python read it with h5py and write it with "
                       "scipy.io.savemat (xlsa17's own files are v5)")
    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ZSLError(f"{path}: cannot read as a MATLAB .mat file ({type(exc).__name__}: {exc})") from None


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5_mat(path):
    """Whether ``path`` is an HDF5 file: a v7.3 .mat (its HDF5 superblock at byte 512, after MATLAB's
    text header) or a plain HDF5 file named .mat (at byte 0)."""
    try:
        with open(path, "rb") as f:
            head = f.read(520)
    except OSError:
        return False
    return head[:8] == HDF5_SIGNATURE or head[512:520] == HDF5_SIGNATURE


def integer_labels(labels, path, key="labels"):
    """``labels`` as int64, refusing fractional, complex or non-numeric values (a float file that
    holds 1.0, 2.0, ... is fine: MATLAB stores doubles)."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (not np.issubdtype(labels.dtype, np.number) or np.issubdtype(labels.dtype, np.complexfloating)):
        raise ZSLError(f"{path}: '{key}' must hold integer class ids, got dtype {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            raise ZSLError(f"{path}: '{key}' must hold integer class ids; {int(bad.sum())} are not integers "
                           f"(e.g. {labels[bad][0]!r})")
    return labels.astype(np.int64)


def _from_mapping(get, keys, path, option):
    """(features, labels or None) from a dict-like file."""
    if "feature_map" in keys:  # region maps, as the extractor and SC-EGG's files store them
        maps = np.asarray(get("feature_map"), dtype=np.float32)
        features = maps.reshape(maps.shape[0], maps.shape[1], -1)
    elif "features" in keys:
        features = np.asarray(get("features"))
    elif len(keys) == 1:
        features = np.asarray(get(next(iter(keys))))
    else:
        raise ZSLError(f"{option} {path}: no 'features' entry (it holds {', '.join(sorted(keys))})")
    return features, (np.asarray(get("labels")) if "labels" in keys else None)


def read_arrays(path: str, option: str = "--features"):
    """(features as a torch tensor, labels as a 0-based int64 numpy array or None) of ``path``;
    ``option`` names the command-line option in the one-line errors."""
    if not os.path.isfile(path):
        raise ZSLError(f"{option} {path}: file not found")
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ZSLError(f"{option} {path}: expected a .npy, .npz, .pt, .h5/.hdf5 or .mat file")
    labels, one_based = None, ext == ".mat"
    try:
        if ext == ".npy":
            features = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                features, labels = _from_mapping(z.__getitem__, set(z.files), path, option)
        elif ext == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(value, torch.Tensor):
                features = value
            elif isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
                features, labels = _from_mapping(lambda k: value[k].numpy(), set(value), path, option)
                features = torch.from_numpy(features) if isinstance(features, np.ndarray) else features
            else:
                raise ZSLError(f"{option} {path}: holds a {type(value).__name__}, expected a tensor or a dict of "
                               "tensors ('features', 'labels')")
        elif ext in (".h5", ".hdf5"):
            with require_h5py().File(path, "r") as f:
                keys = {k for k in f.keys() if hasattr(f[k], "shape")}
                features, labels = _from_mapping(lambda k: f[k][()], keys, path, option)
        else:
            mat = read_mat(path, "features")
            if "features" not in mat:
                raise ZSLError(f"{option} {path}: no 'features' field (a res101.mat-style file has one)")
            features = np.asarray(mat["features"])
            labels = np.asarray(mat["labels"]) if "labels" in mat else None
            if labels is not None and features.ndim == 2 and features.shape[1] == labels.size \
                    and features.shape[0] != features.shape[1]:
                features = features.T  # xlsa17 stores D × N
    except ZSLError:
        raise
    except Exception as exc:  # numpy/torch/h5py/scipy raise several types for corrupt or foreign files
        raise ZSLError(f"{option} {path}: cannot read it ({type(exc).__name__}: {exc})") from None
    if isinstance(features, np.ndarray):
        if not np.issubdtype(features.dtype, np.number) or np.issubdtype(features.dtype, np.complexfloating):
            raise ZSLError(f"{option} {path}: expected real numbers, got dtype {features.dtype}")
        features = torch.from_numpy(np.ascontiguousarray(features))
    if labels is not None:
        labels = integer_labels(labels, f"{option} {path}") - (1 if one_based else 0)
    return features, labels


def read_labels(path: str, option: str = "--labels"):
    """0-based int64 class ids [N] from ``path``: a ``.txt``/``.csv`` file with one integer per line,
    a ``.mat`` file's ``labels`` field (1-based, as in xlsa17), or a file of :func:`read_arrays`'s
    other formats holding one array (or a ``labels`` entry), 0-based."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".txt", ".csv", ".mat"):
        if not os.path.isfile(path):
            raise ZSLError(f"{option} {path}: file not found")
        if ext == ".mat":
            mat = read_mat(path, "labels")
            if "labels" not in mat:
                raise ZSLError(f"{option} {path}: no 'labels' field")
            return integer_labels(mat["labels"], f"{option} {path}") - 1
        try:
            values = np.loadtxt(path, ndmin=1, delimiter="," if ext == ".csv" else None)
        except ValueError as exc:
            raise ZSLError(f"{option} {path}: expected one integer class id per line ({exc})") from None
        return integer_labels(values, f"{option} {path}")
    values, labels = read_arrays(path, option)
    if labels is None:
        if values.dim() != 1 and not (values.dim() == 2 and 1 in values.shape):
            raise ZSLError(f"{option} {path}: expected one class id per sample, got shape {list(values.shape)}")
        labels = integer_labels(values.numpy(), f"{option} {path}")
    return labels
