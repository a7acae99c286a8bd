"""Predict with a trained run: ``python -m zslfast.predict RUN --features FILE [--top-k K] [--out CSV]``.

RUN is a finished run's folder (its ``model.pt``) or the file. FILE holds the features the method
takes, as its dataset stores them (the run's normalisation is applied here): a ``.npy`` or ``.pt``
array ([N, D] vectors; [N, C, R] region maps for SC-EGG) or a ``res101.mat``-style ``.mat`` (its
``features`` field, D × N as xlsa17 stores it, or N × D). The predictions (the top ``K`` classes of
each sample, best first, with their names) are written as CSV to ``--out`` (atomically: an error
leaves no partial file) or printed. Bad input is one ``zslfast: error:`` line and exit code 2.
"""
import argparse
import csv
import io
import os
import sys

import numpy as np
import torch

from zslfast.errors import ZSLError, run_cli
from zslfast.io import write_atomic_text


def read_features(path: str) -> torch.Tensor:
    """The feature array of ``path`` (.npy, .pt or a res101.mat-style .mat), one clear error otherwise."""
    if not os.path.isfile(path):
        raise ZSLError(f"--features {path}: file not found")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False))
        if ext == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor):
                raise ZSLError(f"--features {path}: holds a {type(value).__name__}, expected one tensor")
            return value
        if ext == ".mat":
            from zslfast.data.xlsa17 import read_mat

            mat = read_mat(path, "features")
            if "features" not in mat:
                raise ZSLError(f"--features {path}: no 'features' field (a res101.mat-style file has one)")
            feats = np.asarray(mat["features"])
            if "labels" in mat and feats.ndim == 2 and feats.shape[1] == np.asarray(mat["labels"]).size \
                    and feats.shape[0] != feats.shape[1]:
                feats = feats.T  # xlsa17 stores D × N
            return torch.from_numpy(np.ascontiguousarray(feats))
    except ZSLError:
        raise
    except Exception as exc:  # numpy/torch raise several types for corrupt or foreign files
        raise ZSLError(f"--features {path}: cannot read it ({type(exc).__name__}: {exc})") from None
    raise ZSLError(f"--features {path}: expected a .npy, .pt or .mat file")


def predictions_csv(model, ids: torch.Tensor) -> str:
    """CSV text: one row per sample, its rank-1..K class ids and names."""
    ids = ids.reshape(ids.shape[0], -1)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    k = ids.shape[1]
    w.writerow(["sample"] + [f"{col}_{r}" for r in range(1, k + 1) for col in ("class", "name")])
    for i, row in enumerate(ids.tolist()):
        w.writerow([i] + [v for c in row for v in (c, model.class_names_all[c])])
    return out.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zslfast.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("run", metavar="RUN", help="a finished run's folder, or its model.pt")
    p.add_argument("--features", required=True, help=".npy, .pt or res101.mat-style .mat")
    p.add_argument("--setting", choices=["gzsl", "zsl"], default="gzsl",
                   help="gzsl: among all trained classes (default); zsl: among the unseen classes")
    p.add_argument("--top-k", type=int, default=1, help="classes per sample, best first (default 1)")
    p.add_argument("--out", help="CSV file to write (default: print)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    def body():
        from zslfast.api import load

        if args.out and os.path.isdir(args.out):
            raise ZSLError(f"--out {args.out}: is a folder; give a file name")
        model = load(args.run, args.device)
        ids = model.predict(read_features(args.features), args.setting, args.top_k).cpu()
        text = predictions_csv(model, ids)
        if args.out:
            write_atomic_text(args.out, text)
            print(f"wrote {args.out}: {ids.shape[0]} samples, top {args.top_k}")
        else:
            sys.stdout.write(text)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
