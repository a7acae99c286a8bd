"""``python -m zslfast.data check DIR``: validate a dataset folder with the readers' own checks and
print what is in it.

DIR is one dataset folder: xlsa17 format (``res101.mat`` + ``att_splits.mat``; ``--features FILE
[--labels FILE]`` replace ``res101.mat`` as in training) or SC-EGG's region
layout (``feature_map_ResNet_101_<NAME>.hdf5``, read with ``storage=stream`` so a large file is not
loaded). A problem ends with the reader's one-line error and exit code 2; otherwise the summary lists
the classes (seen / unseen), the split sizes, the class embeddings the folder offers (``att``,
``original_att``, ``sent``) and the per-class sample counts of each split.
"""
import glob
import os

import torch

from zslfast.errors import ZSLError
from zslfast.data.xlsa17 import ATTRIBUTE_SOURCES, read_mat, read_xlsa17_folder


def _embeddings(folder):
    """{source: dimension} of the class embeddings the folder holds."""
    out = {}
    att = os.path.join(folder, "att_splits.mat")
    mat = read_mat(att, "class attributes and splits")
    for key in ("att", "original_att"):
        if key in mat:
            out[key] = int(mat[key].shape[0])
    sent = os.path.join(folder, "sent_splits.mat")
    if os.path.isfile(sent):
        out["sent"] = int(read_mat(sent, "sentence embeddings")["att"].shape[0])
    return {k: out[k] for k in ATTRIBUTE_SOURCES if k in out}


def _counts_line(labels, idx, classes):
    counts = torch.bincount(labels[idx], minlength=int(labels.max()) + 1)[classes]
    if counts.numel() == 0:
        return "no classes"
    return (f"{int(counts.sum())} samples over {int((counts > 0).sum())}/{counts.numel()} classes, per class "
            f"min {int(counts.min())} / median {int(counts.median())} / max {int(counts.max())}")


def check_folder(folder, features=None, labels=None):
    """Read ``folder`` with the matching reader (raises ZSLError on any problem) and return the
    summary text (see the module docstring). ``features`` / ``labels``: files replacing its
    ``res101.mat``, as the training command's ``--features`` / ``--labels``."""
    if not os.path.isdir(folder):
        raise ZSLError(f"data check {folder}: no such folder")
    regions = sorted(glob.glob(os.path.join(folder, "feature_map_ResNet_101_*.hdf5")))
    if features:
        data = read_xlsa17_folder(folder, features_file=os.path.abspath(features), labels_file=labels)
        kind, embeddings = f"att_splits.mat + {features}", _embeddings(folder)
    elif os.path.isfile(os.path.join(folder, "res101.mat")):
        data = read_xlsa17_folder(folder)
        kind, embeddings = "xlsa17 (res101.mat + att_splits.mat)", _embeddings(folder)
    elif regions:
        from zslfast.data.regions import read_region_hdf5

        data = read_region_hdf5(regions[0], storage="stream", w2v="random")
        kind = f"SC-EGG region features ({os.path.basename(regions[0])})"
        embeddings = {"att": data.attribute_dim}
    else:
        raise ZSLError(f"data check {folder}: neither res101.mat (xlsa17) nor feature_map_ResNet_101_<NAME>.hdf5 in it "
                       "(features elsewhere: --features FILE [--labels FILE])")
    seen, unseen = data.seen_classes, data.unseen_classes
    lines = [f"{folder}: {kind}", f"  {data.summary()}",
             f"  classes: {data.num_classes} ({seen.numel()} seen, {unseen.numel()} unseen)",
             "  class embeddings: " + ", ".join(f"{k} ({d}-d)" for k, d in embeddings.items())]
    for split in ("trainval", "test_seen", "test_unseen", "train", "val"):
        if split in data.splits:
            classes = unseen if split == "test_unseen" else torch.unique(data.labels[data.splits[split]])
            lines.append(f"  {split:<11} {_counts_line(data.labels, data.splits[split], classes)}")
    return "\n".join(lines)
