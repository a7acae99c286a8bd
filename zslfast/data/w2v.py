"""Attribute word vectors (one d-vector per attribute), the semantic input of DAZLE-style attention.

Sources, chosen by one setting (``w2v``):

- ``auto``: the region file's own ``w2v_att`` (SC-EGG's files carry DAZLE's vectors);
- a path to a ``.npy`` file [A, d], loaded with ``allow_pickle=False`` (pickles are never
  unpickled: a pickle can run code);
- ``random``: DAZLE's own no-vector branch (``init_w2v_att=None``): V ~ N(0, 1) of shape [A, 300],
  here row-normalised so that its scale matches the word-vector path. The method still trains (V is
  trainable), but published numbers assume real word vectors: this is recorded as a deviation.

DAZLE's real 300-d vectors for SUN, CUB and AWA2 are staged in ``../shared/data/<DS>/w2v_att.npy``
(:func:`find_shared_w2v`). SUN's row 88 ("man-made", out of the word2vec vocabulary) is all zeros;
zero rows are accepted with a warning (they stay zero after row normalisation).
"""
import os
import warnings

import numpy as np
import torch

from zslfast.errors import ZSLError

RANDOM_DIM = 300


def find_shared_w2v(name, shared_root=None):
    """Path of ``<shared>/data/<name>/w2v_att.npy`` (shared root as for ``--like``), else of the copy
    packaged with zslfast, or None."""
    from zslfast.data.synthetic import DEFAULT_SHARED_DATA

    from zslfast.data.synthetic import PACKAGED_LIKE

    for root in [r for r in (shared_root, os.environ.get("ZSLFAST_SHARED_DATA"), DEFAULT_SHARED_DATA) if r]:
        path = os.path.join(root, str(name).upper(), "w2v_att.npy")
        if os.path.isfile(path):
            return os.path.normpath(path)
    packaged = os.path.join(PACKAGED_LIKE, f"{str(name).upper()}_w2v_att.npy")  # the copy installed with zslfast
    return packaged if os.path.isfile(packaged) else None


def load_w2v_file(path, num_attributes=None):
    """[A, d] float64 array from a ``.npy`` file, checked (shape, finiteness)."""
    if not str(path).endswith(".npy"):
        raise ZSLError(f"w2v {path}: only .npy files are read (never pickles); convert with numpy.save")
    if not os.path.isfile(path):
        raise ZSLError(f"w2v {path}: file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ZSLError(f"w2v {path}: not a plain numeric .npy array ({exc})") from None
    return check_w2v(arr, num_attributes, path)


def check_w2v(arr, num_attributes, source):
    arr = np.asarray(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise ZSLError(f"{source}: attribute word vectors must be a numeric [A, d] matrix, got shape "
                       f"{arr.shape} dtype {arr.dtype}")
    if num_attributes is not None and arr.shape[0] != num_attributes:
        raise ZSLError(f"{source}: {arr.shape[0]} word vectors for {num_attributes} attributes")
    if not np.isfinite(arr).all():
        raise ZSLError(f"{source}: attribute word vectors contain NaN/inf values")
    return arr.astype(np.float64)


def zero_rows(arr):
    return np.flatnonzero(~np.any(arr != 0, axis=1)).tolist()


def random_w2v(num_attributes, seed=0, dim=RANDOM_DIM):
    """DAZLE's no-vector initialisation, row-normalised: [A, dim] float64."""
    v = np.random.default_rng([seed, 0x57]).standard_normal((num_attributes, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def resolve_w2v(spec, num_attributes, file_w2v=None, source="", seed=0):
    """(float32 tensor [A, d], info dict) for the ``w2v`` setting ``spec`` (module docstring).

    ``file_w2v`` is the data file's own ``w2v_att`` (or None); ``info`` records where the vectors
    came from and which rows are all zero.
    """
    spec = "auto" if spec is None else str(spec)
    if spec == "auto":
        if file_w2v is None:
            raise ZSLError(f"{source}: no 'w2v_att' in the file; set w2v to a .npy path of [A, d] word vectors "
                           "or to 'random' (DAZLE's no-vector fallback)")
        arr, info = check_w2v(file_w2v, num_attributes, source), {"source": "file"}
    elif spec == "random":
        arr, info = random_w2v(num_attributes, seed), {"source": "random", "deviation": "no word vectors: random V"}
    else:
        arr, info = load_w2v_file(spec, num_attributes), {"source": os.path.abspath(spec)}
    zeros = zero_rows(arr)
    if zeros:
        warnings.warn(f"{source or spec}: attribute word vectors {zeros} are all zero (their attention queries "
                      "start at zero)", stacklevel=2)
    info["zero_rows"] = zeros
    info["dim"] = int(arr.shape[1])
    return torch.from_numpy(arr.astype(np.float32)), info
