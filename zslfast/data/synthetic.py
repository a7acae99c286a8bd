"""Synthetic ZSL data: the embedded default, and xlsa17-shaped stand-ins for real datasets.

Features are a non-linear function of the class embedding (a random two-layer network), plus a
class-specific offset that the embedding does not explain, plus per-sample noise, passed through a
ReLU so that they are non-negative and sparse like ResNet features. So zero-shot transfer is possible
(the embedding predicts most of a class's mean) but not trivial (the offset and the noise are not
predictable). With ``like=NAME`` the real class embeddings, class count and split sizes of
``NAME``'s ``att_splits.mat`` are used; only the features and labels are made up.

    python -m zslfast.data synthetic [--like CUB|path/to/att_splits.mat] --out DIR [--seed N]

writes ``DIR/<NAME>/res101.mat`` and ``att_splits.mat`` (``NAME``: ``--name``, else see
:func:`folder_name`), loadable with ``python -m zslfast.train --dataset NAME --data-root DIR``.
"""
import argparse
import os

import numpy as np
import scipy.io
import torch

from zslfast.data.dataset import ZSLDataset
from zslfast.data.xlsa17 import DATASETS, FOLDER_NAME, dataset_name, read_att_splits
from zslfast.errors import ZSLError, run_cli

# Seen/unseen class counts of the xlsa17 proposed splits (the att_splits files hold no labels, so the
# counts cannot be read from them).
UNSEEN_CLASSES = {"AWA1": 10, "AWA2": 10, "CUB": 50, "SUN": 72, "APY": 12, "FLO": 20}

DEFAULT_SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                   "..", "shared", "data")


def like_dataset_name(like):
    """The xlsa17 dataset a ``--like`` argument stands for: the name itself, or for a path the name
    of the folder holding the file when that is a dataset name (``.../CUB/att_splits.mat``);
    None for any other path."""
    if os.path.isfile(str(like)):
        folder = os.path.basename(os.path.dirname(os.path.abspath(str(like))))
        return folder.upper() if folder.upper() in DATASETS else None
    return dataset_name(like)


PACKAGED_LIKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "like")


def find_att_splits(like, shared_root=None):
    """(path, dataset name or None) of the class table for ``like``: a dataset name (its
    att_splits.mat in ``shared_root``, the ZSLFAST_SHARED_DATA variable or ../shared/data, else the
    compact copy packaged with zslfast, ``zslfast/data/like/NAME.npz``, so that ``--like NAME``
    works from an installed package) or a path to an att_splits.mat file (named after its folder,
    see :func:`like_dataset_name`)."""
    if os.path.isfile(str(like)):
        return str(like), like_dataset_name(like)
    name = dataset_name(like)
    roots = [shared_root, os.environ.get("ZSLFAST_SHARED_DATA"), DEFAULT_SHARED_DATA]
    for root in [r for r in roots if r]:
        path = os.path.join(root, name, "att_splits.mat")
        if os.path.isfile(path):
            return os.path.normpath(path), name
    packaged = os.path.join(PACKAGED_LIKE, f"{name}.npz")
    if os.path.isfile(packaged):
        return packaged, name
    raise ZSLError(f"--like {like}: no att_splits.mat found for {name} (looked in "
                   f"{', '.join(os.path.normpath(r) for r in roots if r)}); pass a path to an att_splits.mat")


def read_like_table(path):
    """What a synthetic layout needs from an att_splits.mat (or its packaged .npz copy, written by
    ``tools/make_like_tables.py``): ``attributes`` (float32 [C, A] tensor), ``class_names`` and
    ``split_sizes`` (trainval, test_seen, test_unseen)."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return {"attributes": torch.from_numpy(z["attributes"].copy()), "class_names": [str(n) for n in z["class_names"]],
                    "split_sizes": tuple(int(v) for v in z["split_sizes"])}
    meta = read_att_splits(path)
    return {"attributes": meta["attributes"], "class_names": meta["class_names"],
            "split_sizes": tuple(meta["splits"][k].numel() for k in ("trainval", "test_seen", "test_unseen"))}


def _spread(total, parts, rng):
    """``total`` items over ``parts`` bins as evenly as possible, the remainder to random bins."""
    counts = np.full(parts, total // parts, dtype=np.int64)
    counts[rng.choice(parts, total % parts, replace=False)] += 1
    return counts


def synthetic_attributes(rng, c, attribute_dim):
    """Sparse, non-negative, correlated class attributes [c, attribute_dim], L2-normalised per class
    like xlsa17's ``att``."""
    latent = rng.standard_normal((c, max(4, attribute_dim // 4)))
    att = np.maximum(latent @ rng.standard_normal((latent.shape[1], attribute_dim)), 0)
    att += 1e-3 * rng.random(att.shape)
    return att / np.linalg.norm(att, axis=1, keepdims=True)


def synthetic_layout(rng, like, num_classes, num_unseen, attribute_dim, images_per_class, test_seen_fraction,
                     shared_root=None):
    """Classes and split sizes of a synthetic dataset: ``like``'s real attributes, class names, class
    count and split sizes, or the built-in default's. Returns a dict with ``attributes`` (float64
    [C, A]), ``class_names``, ``num_classes``, ``split_sizes`` (C, U, n_trainval, n_test_seen,
    n_test_unseen, the arguments of :func:`synthetic_splits`), ``name`` and ``path`` (the
    att_splits.mat, or None)."""
    if like is not None:
        path, name = find_att_splits(like, shared_root)
        meta = read_like_table(path)
        att = meta["attributes"].numpy().astype(np.float64)
        c = att.shape[0]
        u = UNSEEN_CLASSES.get(name, max(1, round(0.2 * c)))
        sizes = meta["split_sizes"]
        return {"attributes": att, "class_names": meta["class_names"], "num_classes": c, "split_sizes": (c, u) + sizes,
                "name": name or f"synthetic_like_{os.path.basename(os.path.dirname(os.path.abspath(path)))}",
                "dataset": name, "path": path}
    c, u = num_classes, num_unseen
    if not 0 < u < c:
        raise ZSLError(f"synthetic data needs 0 < num_unseen < num_classes, got {u} and {c}")
    att = synthetic_attributes(rng, c, attribute_dim)
    n_seen = (c - u) * images_per_class
    n_ts = round(test_seen_fraction * n_seen)
    return {"attributes": att, "class_names": [f"synthetic_{i:03d}" for i in range(c)], "num_classes": c,
            "split_sizes": (c, u, n_seen - n_ts, n_ts, u * images_per_class), "name": "synthetic", "dataset": None,
            "path": None}


def with_val_partition(rng, seen, labels, trainval, test_seen, test_unseen):
    """The splits dict with xlsa17-style class-disjoint ``train``/``val`` parts of trainval (20% of the
    seen classes are validation classes)."""
    val_classes = rng.choice(seen, max(1, round(0.2 * seen.size)), replace=False)
    in_val = np.isin(labels[trainval], val_classes)
    return {"trainval": trainval, "test_seen": test_seen, "test_unseen": test_unseen,
            "train": trainval[~in_val], "val": trainval[in_val]}


def synthetic_splits(rng, c, u, n_tv, n_ts, n_tu):
    """Random seen/unseen classes and labels for ``n_tv + n_ts`` seen and ``n_tu`` unseen samples, in
    random sample order: (labels, seen classes, trainval, test_seen, test_unseen), every seen class
    keeping at least one trainval sample."""
    perm = rng.permutation(c)
    unseen, seen = np.sort(perm[:u]), np.sort(perm[u:])
    # Labels: unseen images spread over unseen classes, seen (trainval + test_seen) over seen classes.
    labels = np.concatenate([np.repeat(unseen, _spread(n_tu, u, rng)),
                             np.repeat(seen, _spread(n_tv + n_ts, c - u, rng))])
    order = rng.permutation(labels.size)  # sample locations in random order
    labels = labels[order]
    is_unseen = np.isin(labels, unseen)
    test_unseen = np.flatnonzero(is_unseen)
    seen_idx = rng.permutation(np.flatnonzero(~is_unseen))
    test_seen, trainval = np.sort(seen_idx[:n_ts]), np.sort(seen_idx[n_ts:])
    missing = np.setdiff1d(seen, labels[trainval])
    if missing.size:  # a tiny class lost all its training samples to test_seen: give one back
        for cls in missing:
            j = test_seen[labels[test_seen] == cls][0]
            test_seen, trainval = test_seen[test_seen != j], np.sort(np.append(trainval, j))
    return labels, seen, trainval, test_seen, test_unseen


def make_synthetic(like=None, seed=0, num_classes=50, num_unseen=10, attribute_dim=64, feature_dim=512,
                   images_per_class=60, test_seen_fraction=0.2, hidden_dim=None, latent_dim=None, class_offset=0.8,
                   noise=2.5, shared_root=None):
    """Generate a :class:`ZSLDataset` (deterministic for a given seed).

    Args:
        like: None for the small built-in default, or a dataset name / att_splits.mat path whose
            class embeddings, class count and split sizes are reused (features become 2048-d unless
            ``feature_dim`` says otherwise).
        seed: the random seed.
        num_classes, num_unseen, attribute_dim, images_per_class, test_seen_fraction: the built-in
            default's sizes (ignored with ``like``).
        feature_dim: visual feature size (default 512, or 2048 with ``like``).
        latent_dim: dimension of the space in which classes differ (default: the class count,
            clipped to [48, 256]).
        class_offset: scale of the class-specific offset the embedding does not explain (relative
            to the unit-variance part it does explain).
        noise: scale of the per-sample latent noise.
    """
    rng = np.random.default_rng(seed)
    layout = synthetic_layout(rng, like, num_classes, num_unseen, attribute_dim, images_per_class,
                              test_seen_fraction, shared_root)
    att, names, c, name = layout["attributes"], layout["class_names"], layout["num_classes"], layout["name"]
    if like is not None:
        feature_dim = feature_dim if feature_dim != 512 else 2048
        source = f"synthetic features on {layout['path']}"
    else:
        source = "synthetic (built-in default)"

    labels, seen, trainval, test_seen, test_unseen = synthetic_splits(rng, *layout["split_sizes"])
    n = labels.size

    # Class structure lives in a latent space of `latent_dim` dimensions (real features, too, vary
    # between classes in far fewer directions than they have): class means are a random two-layer
    # network of the (standardised) embedding, rescaled to unit variance, plus an unexplained class
    # offset; samples add latent noise (which is what makes classes confusable), then a random
    # projection to `feature_dim`, a little isotropic noise and a ReLU.
    d = att.shape[1]
    hidden_dim = hidden_dim or max(64, min(512, 2 * d))
    latent_dim = latent_dim or max(48, min(256, c))  # more classes need more room to differ in
    emb = (att - att.mean(0)) / (att.std(0) + 1e-8)
    w1 = rng.standard_normal((d, hidden_dim)) / np.sqrt(d)
    w2 = rng.standard_normal((hidden_dim, latent_dim)) / np.sqrt(hidden_dim)
    means = np.tanh(emb @ w1 + 0.3 * rng.standard_normal(hidden_dim)) @ w2
    means = (means - means.mean(0)) / (means.std(0) + 1e-8)
    means += class_offset * rng.standard_normal(means.shape)
    proj = rng.standard_normal((latent_dim, feature_dim)) / np.sqrt(latent_dim)
    bias = 0.3 * rng.standard_normal(feature_dim)  # per-dimension sparsity level
    features = np.empty((n, feature_dim), dtype=np.float32)
    for start in range(0, n, 8192):  # in chunks: bounded memory for AWA-sized data
        sl = slice(start, min(n, start + 8192))
        z = (means[labels[sl]] + noise * rng.standard_normal((sl.stop - sl.start, latent_dim))) @ proj
        z += 0.3 * rng.standard_normal(z.shape) + bias
        features[sl] = np.maximum(z, 0)

    splits = with_val_partition(rng, seen, labels, trainval, test_seen, test_unseen)
    return ZSLDataset(name=name, features=torch.from_numpy(features), labels=torch.from_numpy(labels),
                      attributes=torch.from_numpy(att.astype(np.float32)), class_names=list(names),
                      splits={k: torch.from_numpy(v.astype(np.int64)) for k, v in splits.items()},
                      source=source, info={"synthetic": {"like": like, "seed": seed}})


def _save_mat(folder, fname, fields):
    final = os.path.join(folder, fname)
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        scipy.io.savemat(f, fields)
    os.replace(tmp, final)


def write_att_splits(dataset, folder, original_att=None):
    """Write ``<folder>/att_splits.mat`` (xlsa17: ``att`` d × C, 1-based uint16 locations where N
    allows, class names; ``original_att`` [C, d] too when given) for ``dataset``, atomically."""
    os.makedirs(folder, exist_ok=True)
    loc_type = np.uint16 if dataset.labels.shape[0] < 2 ** 16 else np.uint32
    att_fields = {"att": dataset.attributes.numpy().T.astype(np.float64),
                  "allclasses_names": np.array([[s] for s in dataset.class_names], dtype=object)}
    if original_att is not None:
        att_fields["original_att"] = np.asarray(original_att, dtype=np.float64).T
    for split, key in (("trainval", "trainval_loc"), ("test_seen", "test_seen_loc"),
                       ("test_unseen", "test_unseen_loc"), ("train", "train_loc"), ("val", "val_loc")):
        if split in dataset.splits:
            att_fields[key] = (dataset.splits[split].numpy() + 1).astype(loc_type)[:, None]
    _save_mat(folder, "att_splits.mat", att_fields)


def folder_name(name):
    """The folder a synthetic dataset called ``name`` is written to, chosen so that
    ``--dataset FOLDER --data-root OUT`` loads it: ``--like NAME`` data keeps NAME (and so NAME's
    settings), data like a file keeps its ``synthetic_like_<folder>`` name, and the built-in
    default, whose own name ``synthetic`` means "generate it", becomes ``synthetic_default``."""
    return "synthetic_default" if name.lower() == "synthetic" else name


def check_folder_name(name):
    """``--name``: a folder name that ``--dataset`` accepts."""
    if not FOLDER_NAME.fullmatch(name) or name.lower() == "synthetic":
        raise ZSLError(f"--name {name!r}: expected a folder name of letters, digits and _ . + - (not 'synthetic', "
                       "which means the built-in generated data)")
    return name


def write_xlsa17(dataset, out_dir, name=None):
    """Write ``dataset`` as ``<out_dir>/<name>/res101.mat`` and ``att_splits.mat`` (xlsa17 layout:
    features D × N, 1-based labels and locations, uint16 locations when N allows). Files are written
    to temporary names first and renamed, so a failed write leaves no partial dataset."""
    folder = os.path.join(out_dir, name or folder_name(dataset.name))
    write_att_splits(dataset, folder)
    _save_mat(folder, "res101.mat", {"features": dataset.features.numpy().T,
                                     "labels": (dataset.labels.numpy() + 1).astype(np.int32)[:, None]})
    return folder


def synthetic_parser(prog, description):
    """The arguments every synthetic-data writer takes: --like, --out, --seed."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--like", help="dataset name (AWA1, AWA2, CUB, SUN, APY, FLO) or an att_splits.mat path")
    p.add_argument("--out", required=True, help="output folder; the files go to OUT/<NAME>/")
    p.add_argument("--name", help="the dataset folder's name (default: the --like dataset's name, synthetic_like_<folder> "
                                  "for an att_splits.mat path, synthetic_default without --like)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None):
    p = synthetic_parser("python -m zslfast.data synthetic", "Write a synthetic dataset in xlsa17 format.")
    p.add_argument("--feature-dim", type=int, default=None)
    args = p.parse_args(argv)

    def body():
        kwargs = {"feature_dim": args.feature_dim} if args.feature_dim else {}
        data = make_synthetic(like=args.like, seed=args.seed, **kwargs)
        folder = write_xlsa17(data, args.out, args.name and check_folder_name(args.name))
        print(f"wrote {folder}: {data.summary()}")
        print(f"train on it: python -m zslfast.train --dataset {os.path.basename(folder)} --data-root {args.out}")

    return run_cli(body)
