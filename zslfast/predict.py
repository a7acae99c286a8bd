"""Predict with a trained run.

    python -m zslfast.predict RUN (--features FILE | --images DIR --weights resnet101.pth)
        [--classes FILE] [--setting gzsl|zsl] [--top-k K] [--out predictions.csv]

RUN is a finished run's folder (its ``model.pt``) or the file. ``--features`` holds what the method
takes, as its dataset stores them (the run's normalisation is applied here), in any format of
:mod:`zslfast.data.arrays`: a ``.npy``, ``.npz`` or ``.pt`` array ([N, D] vectors; [N, C, R] region
maps for SC-EGG), a ``res101.mat``-style ``.mat`` (its ``features`` field, D × N as xlsa17 stores
it, or N × D) or an HDF5 file (``features``, or region maps ``feature_map`` [N, C, H, W], SC-EGG's
layout and ``python -m zslfast.data extract``'s). ``--images`` extracts the region maps
of every image under DIR (sorted by path) with the package's extractor, for the methods that read
region maps (SC-EGG); the CSV's ``sample`` column is then the image's path.

``--classes`` predicts among new classes given by their vectors (a CSV of name, vector rows, or an
``att_splits.mat``): they replace the trained unseen classes (``zslfast.Model.with_classes``; a
generative method refits its final classifiers first, seeded by ``--seed``). The predictions (the
top ``K`` classes of each sample, best first, with their names) are written as CSV to ``--out``
(atomically: an error leaves no partial file) or printed. Bad input is one ``zslfast: error:`` line
and exit code 2.
"""
import argparse
import csv
import io
import os
import sys

import torch

from zslfast.data.arrays import read_arrays
from zslfast.errors import ZSLError, run_cli
from zslfast.io import write_atomic_text


def predictions_csv(model, ids: torch.Tensor, samples=None) -> str:
    """CSV text: one row per sample (its index, or ``samples[i]``), its rank-1..K class ids and names."""
    ids = ids.reshape(ids.shape[0], -1)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    k = ids.shape[1]
    w.writerow(["sample"] + [f"{col}_{r}" for r in range(1, k + 1) for col in ("class", "name")])
    for i, row in enumerate(ids.tolist()):
        w.writerow([i if samples is None else samples[i]] + [v for c in row for v in (c, model.class_names_all[c])])
    return out.getvalue()


def read_images(model, folder: str, weights: str, size: int = None, batch: int = 32, device: str = "cpu"):
    """(region maps of the images under ``folder``, their paths) for a model that reads region maps;
    ``size`` defaults to the one whose maps match the model's (32 × √R)."""
    from zslfast.data.extract import image_files, region_maps

    shape = model.record["inputs"]["shape"]
    if model.record["inputs"]["kind"] != "regions":
        raise ZSLError(f"--images: {model.method} reads feature vectors; extract them first (python -m zslfast.data "
                       "extract) and give --features")
    if not weights:
        raise ZSLError("--images needs --weights: a local torchvision ResNet-101 .pth file (nothing is downloaded)")
    side = round(shape[1] ** 0.5)
    size = size or 32 * side
    if (size // 32) ** 2 != shape[1]:
        raise ZSLError(f"--size {size}: gives {(size // 32) ** 2} regions per image, the model was trained on {shape[1]}")
    paths = image_files(folder)
    return region_maps(paths, weights, size, batch, device), paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zslfast.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("run", metavar="RUN", help="a finished run's folder, or its model.pt")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", help=".npy, .npz, .pt, res101.mat-style .mat or .h5/.hdf5 (vectors or region maps)")
    src.add_argument("--images", metavar="DIR", help="a folder of images (methods on region maps: SC-EGG)")
    p.add_argument("--weights", help="with --images: local torchvision resnet101 .pth file")
    p.add_argument("--size", type=int, help="with --images: crop size (default: the model's, 448 for 14×14 maps)")
    p.add_argument("--batch", type=int, default=32, help="with --images: images per batch (default 32)")
    p.add_argument("--classes", metavar="FILE",
                   help="new classes to predict among: a CSV (name, then the vector; optional header) or an "
                        "att_splits.mat (its classes other than the trained seen ones)")
    p.add_argument("--seed", type=int, default=0, help="with --classes: seed of a generative method's refit")
    p.add_argument("--setting", choices=["gzsl", "zsl"], default="gzsl",
                   help="gzsl: among all classes (default); zsl: among the unseen (or the --classes) ones")
    p.add_argument("--top-k", type=int, default=1, help="classes per sample, best first (default 1)")
    p.add_argument("--out", help="CSV file to write (default: print)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    def body():
        from zslfast.api import load

        if args.out and os.path.isdir(args.out):
            raise ZSLError(f"--out {args.out}: is a folder; give a file name")
        model = load(args.run, args.device)
        if args.classes:
            model = model.with_classes(args.classes, seed=args.seed)
            print(f"{len(model.unseen)} new classes ({model.method}: {model.refit_s:.1f}s)", file=sys.stderr)
        if args.images:
            x, samples = read_images(model, args.images, args.weights, args.size, args.batch, args.device)
        else:
            x, samples = read_arrays(args.features)[0], None
        ids = model.predict(x, args.setting, args.top_k).cpu()
        text = predictions_csv(model, ids, samples)
        if args.out:
            write_atomic_text(args.out, text)
            print(f"wrote {args.out}: {ids.shape[0]} samples, top {args.top_k}")
        else:
            sys.stdout.write(text)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
