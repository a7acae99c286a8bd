"""Reader for the EPGN-style ``data.mat`` / ``label.mat`` layout that the original GSMFlow code
used for CUB and FLO (1024-d sentence embeddings; see the GSMFlow reference note §1b)."""
import os

import numpy as np
import torch

from zslfast.data.dataset import ZSLDataset
from zslfast.data.xlsa17 import read_mat
from zslfast.errors import ZSLError


def _field(mat, key, path):
    if key not in mat:
        raise ZSLError(f"{path}: missing field '{key}'")
    return np.asarray(mat[key])


def load_epgn(root, name):
    """Load ``<root>/<name>/data.mat`` and ``label.mat`` as a :class:`ZSLDataset`.

    ``data.mat``: ``train_fea``, ``test_seen_fea``, ``test_unseen_fea`` (N × 2048), ``seen_pro`` (S × d)
    and ``unseen_pro`` (U × d). ``label.mat``: ``train_idx`` and ``test_seen_idex`` (1-based rows of
    ``seen_pro``) and ``test_unseen_idex`` (1-based; mapped through their sorted unique values to the
    rows of ``unseen_pro``, as the original loader does). Classes are numbered seen first: seen
    class s is id s, unseen class u is id S + u. Test-seen labels must use the training label
    space; the original code assumed this without checking.
    """
    folder = os.path.join(root, name)
    dpath, lpath = os.path.join(folder, "data.mat"), os.path.join(folder, "label.mat")
    data, lab = read_mat(dpath, "EPGN features and class embeddings"), read_mat(lpath, "EPGN labels")
    feats = [_field(data, k, dpath).astype(np.float32) for k in ("train_fea", "test_seen_fea", "test_unseen_fea")]
    seen_pro, unseen_pro = _field(data, "seen_pro", dpath), _field(data, "unseen_pro", dpath)
    if seen_pro.shape[1] != unseen_pro.shape[1]:
        raise ZSLError(f"{dpath}: seen_pro and unseen_pro have different widths "
                       f"({seen_pro.shape[1]} and {unseen_pro.shape[1]})")
    if len({f.shape[1] for f in feats}) != 1:
        raise ZSLError(f"{dpath}: feature matrices have different widths {[f.shape for f in feats]}")
    ys = [_field(lab, k, lpath).reshape(-1).astype(np.int64) - 1
          for k in ("train_idx", "test_seen_idex", "test_unseen_idex")]
    for f, y, k in zip(feats, ys, ("train", "test_seen", "test_unseen")):
        if f.shape[0] != y.size:
            raise ZSLError(f"{lpath}: {y.size} {k} labels for {f.shape[0]} {k} features in {dpath}")
    s, u = seen_pro.shape[0], unseen_pro.shape[0]
    for y, k in zip(ys[:2], ("train_idx", "test_seen_idex")):
        if y.size and (y.min() < 0 or y.max() >= s):
            raise ZSLError(f"{lpath}: '{k}' must index the {s} rows of seen_pro (1-based), "
                           f"got range [{y.min() + 1}, {y.max() + 1}]")
    if not np.isin(np.unique(ys[1]), np.unique(ys[0])).all():
        raise ZSLError(f"{lpath}: test_seen_idex has classes absent from train_idx")
    uniq = np.unique(ys[2])
    if uniq.size != u:
        raise ZSLError(f"{lpath}: test_unseen_idex has {uniq.size} distinct classes but unseen_pro has {u} rows")
    unseen_labels = s + np.searchsorted(uniq, ys[2])
    n = [f.shape[0] for f in feats]
    bounds = np.cumsum([0] + n)
    splits = {k: torch.arange(int(bounds[i]), int(bounds[i + 1]))
              for i, k in enumerate(("trainval", "test_seen", "test_unseen"))}
    return ZSLDataset(
        name=name, features=torch.from_numpy(np.concatenate(feats)),
        labels=torch.from_numpy(np.concatenate([ys[0], ys[1], unseen_labels])),
        attributes=torch.from_numpy(np.concatenate([seen_pro, unseen_pro]).astype(np.float32)),
        class_names=[f"seen_{i:03d}" for i in range(s)] + [f"unseen_{i:03d}" for i in range(u)],
        splits=splits, source=dpath, info={"format": "epgn"})
