"""A dataset's ``att_splits.mat`` from a simple description: one CSV row per class and the images' labels.

    python -m zslfast.data describe --classes classes.csv (--list images.txt | --labels labels.npy)
                                    --out DIR/NAME [--seed 0] [--test-seen-fraction 0.2]

``classes.csv`` has a header ``class,split,<attribute>,<attribute>,...`` and one row per class, in
label order (class 1 first): its name, ``seen``, ``val`` (a seen class whose images form the
class-disjoint validation split) or ``unseen``, and its attribute values. ``images.txt`` is the
extractor's list, ``relative/path label`` per line with 1-based labels; for features you already
have, ``--labels`` gives their class ids instead (0-based, one per feature row, as
``python -m zslfast.train --labels`` reads them). The proposed-split protocol
of xlsa17 is followed: every image of an unseen class is test_unseen; of each seen class a seeded
``test_seen_fraction`` (at least one image when the class has two or more) is test_seen, the rest
trainval; ``train`` / ``val`` are the trainval images of the seen / val classes. The file is written
atomically; ``python -m zslfast.data extract --classes classes.csv ...`` calls the same writer.
"""
import argparse
import csv
import os
from types import SimpleNamespace

import numpy as np
import torch

from zslfast.errors import ZSLError, run_cli

KINDS = ("seen", "val", "unseen")


def read_image_list(list_path, images):
    """(paths, 1-based labels) from a text file of ``relative/path label`` lines."""
    paths, labels = [], []
    with open(list_path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ZSLError(f"{list_path}:{number}: expected 'relative/path label', got {line.strip()!r}")
            paths.append(os.path.join(images, parts[0]))
            labels.append(int(parts[1]))
    return paths, np.array(labels, dtype=np.int64)


def read_class_table(path):
    """(class names, attributes float64 [C, A], kinds) of a classes.csv (see the module docstring)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ZSLError(f"--classes {path}: cannot read it ({exc.strerror})") from None
    if len(rows) < 3 or len(rows[0]) < 3 or [c.strip().lower() for c in rows[0][:2]] != ["class", "split"]:
        raise ZSLError(f"--classes {path}: expected a header 'class,split,<attribute>,...' and one row per class")
    width = len(rows[0])
    names, kinds, att = [], [], []
    for i, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            raise ZSLError(f"--classes {path}: line {i} has {len(row)} fields, the header {width}")
        kind = row[1].strip().lower()
        if kind not in KINDS:
            raise ZSLError(f"--classes {path}: line {i}: split {row[1]!r} is not one of {', '.join(KINDS)}")
        try:
            values = [float(v) for v in row[2:]]
        except ValueError:
            raise ZSLError(f"--classes {path}: line {i}: attribute values must be numbers") from None
        if not np.all(np.isfinite(values)):
            raise ZSLError(f"--classes {path}: line {i}: attribute values must be finite")
        names.append(row[0].strip())
        kinds.append(kind)
        att.append(values)
    if "unseen" not in kinds or not {"seen", "val"} & set(kinds):
        raise ZSLError(f"--classes {path}: needs at least one seen and one unseen class")
    return names, np.asarray(att, dtype=np.float64), kinds


def proposed_splits(labels, kinds, seed=0, test_seen_fraction=0.2):
    """{split: 0-based image indices} for 0-based ``labels`` and per-class ``kinds`` (module docstring)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    kinds = np.asarray(kinds)
    trainval, test_seen = [], []
    for c in np.flatnonzero(kinds != "unseen"):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(test_seen_fraction * idx.size))
        if idx.size >= 2:
            n_test = min(max(n_test, 1), idx.size - 1)
        perm = rng.permutation(idx)
        test_seen.append(perm[:n_test])
        trainval.append(perm[n_test:])
    trainval, test_seen = np.sort(np.concatenate(trainval)), np.sort(np.concatenate(test_seen))
    splits = {"trainval": trainval, "test_seen": test_seen,
              "test_unseen": np.flatnonzero(kinds[labels] == "unseen")}
    if "val" in kinds:
        in_val = kinds[labels[trainval]] == "val"
        splits["train"], splits["val"] = trainval[~in_val], trainval[in_val]
    return splits


def write_described_att_splits(classes_csv, labels, folder, seed=0, test_seen_fraction=0.2):
    """Write ``folder/att_splits.mat`` for images with 1-based ``labels`` described by ``classes_csv``;
    returns its path."""
    from zslfast.data.synthetic import write_att_splits

    names, att, kinds = read_class_table(classes_csv)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0 or labels.min() < 1 or labels.max() > len(names):
        raise ZSLError(f"image labels must be 1-based class ids in [1, {len(names)}] (the rows of {classes_csv})")
    labels = labels - 1
    empty = [names[c] for c in range(len(names)) if not np.any(labels == c)]
    if empty:
        raise ZSLError(f"--classes {classes_csv}: {len(empty)} classes have no images, e.g. {empty[0]!r}")
    splits = proposed_splits(labels, kinds, seed, test_seen_fraction)
    # as xlsa17 does: `att` is each class's attributes scaled to unit L2 norm, `original_att` the raw values
    norms = np.linalg.norm(att, axis=1, keepdims=True)
    unit = np.divide(att, norms, out=np.zeros_like(att), where=norms > 0)
    table = SimpleNamespace(labels=torch.from_numpy(labels), attributes=torch.from_numpy(unit), class_names=names,
                            splits={k: torch.from_numpy(v) for k, v in splits.items()})
    write_att_splits(table, folder, original_att=att)
    return os.path.join(folder, "att_splits.mat")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zslfast.data describe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", required=True, help="classes.csv: class,split,<attributes...>")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--list", help="images.txt: 'relative/path label' lines, labels 1-based")
    given.add_argument("--labels", help="the images' class ids, 0-based, in feature-row order: .npy, .pt, .txt or "
                                        "a .mat 'labels' field (1-based there), as python -m zslfast.train --labels")
    p.add_argument("--out", required=True, help="the dataset folder to write att_splits.mat into")
    p.add_argument("--seed", type=int, default=0, help="seed of the test_seen draw (default 0)")
    p.add_argument("--test-seen-fraction", type=float, default=0.2)
    args = p.parse_args(argv)

    def body():
        if args.list:
            _, labels = read_image_list(args.list, ".")
        else:
            from zslfast.data.arrays import read_labels

            labels = read_labels(args.labels) + 1
        path = write_described_att_splits(args.classes, labels, args.out, args.seed, args.test_seen_fraction)
        print(f"wrote {path}")

    return run_cli(body)
