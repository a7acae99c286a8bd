"""Region features from images: a ResNet-101 feature map per image, written in SC-EGG's HDF5 layout,
plus the globally pooled features as an xlsa17-style ``res101.mat``.

    python -m zslfast.data extract --images DIR (--list FILE | --res101 res101.mat)
        (--att-splits att_splits.mat | --classes classes.csv --name NAME)
        --weights resnet101-63fe2227.pth --out ROOT [--name NAME] [--size 448] [--batch 32]
        [--dtype float32|float16] [--device cpu|cuda] [--w2v PATH.npy] [--strip-components K]

Preprocessing is SC-EGG's (``../shared/reference/sc_egg_spec.md`` §1.1): RGB; the short side resized
to ``size`` with the long side ``int(size·long/short)`` (bilinear); a ``size``² centre crop at offset
``int(round((H − size)/2))``; /255; ImageNet mean/std. ResNet-101 without its pooling and classifier
gives 2048 × (size/32)² maps (14 × 14 at 448²). The image order is the list's (xlsa17's for
``--res101``, whose paths are re-rooted under ``--images`` by dropping their first K components:
6 for CUB, 7 for SUN, 5 for AWA2 as in SC-EGG); the split locations of ``--att-splits`` index it.

Weights come only from a local file: the run stops with one line if ``--weights`` is missing. Its
sha256 is recorded; a file other than torchvision's IMAGENET1K_V1 (``63fe2227``, SC-EGG's
``pretrained=True``) gives a warning. The output is written per batch to ``<file>.partial`` (one
image per chunk) with the number of finished images, so an interrupted run resumes where it stopped
when started again with the same inputs; the finished file is renamed into place.
"""
import argparse
import json
import os
import shutil
import warnings

import numpy as np
import torch

from zslfast.data.describe import read_image_list, write_described_att_splits
from zslfast.data.regions import LOCATIONS, region_file, require_h5py
from zslfast.data.xlsa17 import mat_locations, read_mat
from zslfast.errors import ZSLError, run_cli

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIP_COMPONENTS = {"CUB": 6, "SUN": 7, "AWA2": 5, "AWA1": 5}


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ZSLError("feature extraction needs Pillow: pip install pillow (or pip install \"zslfast[extract]\")") \
            from None
    return Image


def preprocess(path, size=448):
    """float32 [3, size, size]: resize the short side, centre crop, scale to [0, 1], ImageNet-normalise."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            if w <= h:
                new = (size, int(size * h / w))
            else:
                new = (int(size * w / h), size)
            img = img.resize(new, Image.BILINEAR)
            top, left = int(round((new[1] - size) / 2.0)), int(round((new[0] - size) / 2.0))
            img = img.crop((left, top, left + size, top + size))
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except OSError as exc:
        raise ZSLError(f"{path}: cannot read as an image ({exc})") from None
    arr = (arr - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_res101_list(res101, images, strip):
    """(paths, 1-based labels) from xlsa17's ``res101.mat`` (``image_files``, ``labels``), the paths
    re-rooted under ``images`` by dropping their first ``strip`` '/'-components."""
    mat = read_mat(res101, "image list")
    if "image_files" not in mat or "labels" not in mat:
        raise ZSLError(f"{res101}: needs 'image_files' and 'labels'")
    files = [str(np.asarray(v).reshape(-1)[0]) for v in np.asarray(mat["image_files"]).reshape(-1)]
    paths = [os.path.join(images, *f.split("/")[strip:]) for f in files]
    return paths, np.asarray(mat["labels"]).reshape(-1).astype(np.int64)


def _check_inputs(paths, labels, att_path):
    mat = read_mat(att_path, "class attributes and splits")
    if "att" not in mat:
        raise ZSLError(f"{att_path}: missing field 'att'")
    att = np.asarray(mat["att"], dtype=np.float64).T
    n, k = len(paths), att.shape[0]
    if n == 0:
        raise ZSLError("the image list is empty")
    if labels.min() < 1 or labels.max() > k:
        raise ZSLError(f"image labels must be 1-based class ids in [1, {k}] (the classes of {att_path}), got "
                       f"range [{labels.min()}, {labels.max()}]")
    # the xlsa17 reader's location handling: 1-based (uint16) to 0-based, range-checked against N
    locs = {split: loc.numpy() for split, loc in mat_locations(mat, att_path, n).items() if split in LOCATIONS}
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ZSLError(f"{len(missing)} listed images not found, e.g. {missing[0]}")
    original = np.asarray(mat["original_att"], dtype=np.float64).T if "original_att" in mat else att
    return att, original, locs


def _check_size(size):
    if size % 32 or size < 32:
        raise ZSLError(f"--size must be a positive multiple of 32, got {size}")


def backbone(weights, device="cpu"):
    """(ResNet-101 feature-map network from the local ``weights`` file on ``device``, its sha256),
    with a warning when the file is not the weights SC-EGG used."""
    from zslfast.nn.resnet import IMAGENET1K_V1, IMAGENET1K_V2, load_resnet101

    model, digest = load_resnet101(weights)
    if not digest.startswith(IMAGENET1K_V1):
        which = "IMAGENET1K_V2 weights" if digest.startswith(IMAGENET1K_V2) else "not torchvision's IMAGENET1K_V1"
        warnings.warn(f"{weights}: sha256 {digest[:8]} is {which}; SC-EGG used resnet101-{IMAGENET1K_V1}.pth "
                      "(pretrained=True): features will differ", stacklevel=3)
    return model.to(device), digest


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(folder):
    """The image files under ``folder`` (recursively, by extension), sorted by path."""
    if not os.path.isdir(folder):
        raise ZSLError(f"--images {folder}: not a folder")
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ZSLError(f"--images {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


@torch.no_grad()
def region_maps(paths, weights, size=448, batch=32, device="cpu", progress=True):
    """Region maps [N, 2048, (size/32)²] of the images ``paths``, preprocessed as :func:`extract`
    does (SC-EGG's transform), in memory: what a trained SC-EGG model predicts from."""
    from tqdm import tqdm

    _check_size(size)
    model, _ = backbone(weights, device)
    out = []
    for start in tqdm(range(0, len(paths), batch), desc="images", unit="batch", disable=not progress):
        x = torch.stack([preprocess(p, size) for p in paths[start:start + batch]]).to(device)
        out.append(model(x).flatten(2).float().cpu())
    return torch.cat(out)


def extract(paths, labels, att_splits, weights, out_path, size=448, batch=32, dtype="float32", device="cpu",
            w2v=None, progress=True):
    """Extract region features of ``paths`` into ``out_path`` (SC-EGG layout) and the pooled features
    into ``res101.mat`` beside it; resumes a ``.partial`` file left by an interrupted run."""
    from tqdm import tqdm

    from zslfast.data.w2v import load_w2v_file

    h5py = require_h5py()
    _check_size(size)
    dtype = np.dtype(dtype)
    att, original_att, locs = _check_inputs(paths, labels, att_splits)
    vectors = load_w2v_file(w2v, att.shape[1]) if w2v else None
    model, digest = backbone(weights, device)
    n, side = len(paths), size // 32
    config = json.dumps({"images": paths, "size": size, "weights_sha256": digest, "dtype": str(dtype)})
    partial = out_path + ".partial"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    done = 0
    if os.path.exists(partial):
        try:
            with h5py.File(partial, "r") as f:
                if f.attrs.get("config") == config:
                    done = int(f.attrs["done"])
        except OSError:
            done = 0
    if done == 0:
        with h5py.File(partial, "w") as f:
            f.create_dataset("feature_map", shape=(n, 2048, side, side), dtype=dtype, chunks=(1, 2048, side, side))
            f.attrs["config"] = config
            f.attrs["done"] = 0
    with h5py.File(partial, "a") as f, torch.no_grad():
        ds = f["feature_map"]
        bar = tqdm(total=n, initial=done, desc="extract", unit="img", disable=not progress)
        for start in range(done, n, batch):
            stop = min(n, start + batch)
            x = torch.stack([preprocess(p, size) for p in paths[start:stop]]).to(device)
            ds[start:stop] = model(x).cpu().numpy().astype(dtype, copy=False)
            f.attrs["done"] = stop  # after the maps: a crash here redoes at most one batch
            f.flush()
            bar.update(stop - start)
        bar.close()
        pooled = np.empty((n, 2048), dtype=np.float32)
        for start in range(0, n, 256):
            stop = min(n, start + 256)
            pooled[start:stop] = ds[start:stop].astype(np.float32).reshape(stop - start, 2048, -1).mean(2)
        f.create_dataset("labels", data=labels - 1)
        loc_type = np.uint16 if n < 2 ** 16 else np.uint32
        for split, key in LOCATIONS.items():
            f.create_dataset(key, data=locs[split].astype(loc_type))
        f.create_dataset("att", data=att)
        f.create_dataset("original_att", data=original_att)
        if vectors is not None:
            f.create_dataset("w2v_att", data=vectors)
        f.attrs["transform"] = f"resize short side {size} (bilinear), center crop {size}, ImageNet mean/std"
        f.attrs["weights_sha256"] = digest
        f.attrs["image_files"] = json.dumps(paths)
        del f.attrs["done"]
    _write_pooled(os.path.join(os.path.dirname(out_path), "res101.mat"), pooled, labels, paths)
    os.replace(partial, out_path)
    return out_path


def _write_pooled(path, pooled, labels, paths):
    import scipy.io

    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        scipy.io.savemat(f, {"features": pooled.T, "labels": labels.astype(np.int32)[:, None],
                             "image_files": np.array([[p] for p in paths], dtype=object)})
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zslfast.data extract", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", help="folder the image paths are relative to")
    p.add_argument("--list", help="text file of 'relative/path label' lines (labels 1-based, xlsa17 order)")
    p.add_argument("--res101", help="xlsa17 res101.mat whose image_files and labels give the list")
    p.add_argument("--strip-components", type=int, help="leading path components to drop from res101 paths")
    p.add_argument("--att-splits", help="xlsa17 att_splits.mat (attributes and split locations)")
    p.add_argument("--classes", help="instead of --att-splits: a classes.csv (class,split,<attributes>...; see "
                                     "python -m zslfast.data describe) from which att_splits.mat is written")
    p.add_argument("--split-seed", type=int, default=0, help="with --classes: seed of the test_seen draw")
    p.add_argument("--weights", help="local torchvision resnet101 .pth file (nothing is downloaded)")
    p.add_argument("--out", help="output root: writes OUT/NAME/feature_map_ResNet_101_NAME.hdf5 and res101.mat")
    p.add_argument("--name", help="dataset name (default: the folder holding --att-splits)")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--w2v", help="attribute word vectors (.npy) to store as w2v_att")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    def body():
        if not args.weights:
            raise ZSLError("--weights is required: a local ResNet-101 file (torchvision's resnet101-63fe2227.pth); "
                           "nothing is downloaded")
        for flag in ("images", "out"):
            if not getattr(args, flag):
                raise ZSLError(f"--{flag.replace('_', '-')} is required")
        if bool(args.list) == bool(args.res101):
            raise ZSLError("give exactly one of --list and --res101")
        if bool(args.att_splits) == bool(args.classes):
            raise ZSLError("give exactly one of --att-splits and --classes")
        if args.classes and not args.name:
            raise ZSLError("--classes needs --name (the dataset folder written under --out)")
        name = args.name or os.path.basename(os.path.dirname(os.path.abspath(args.att_splits)))
        if args.list:
            paths, labels = read_image_list(args.list, args.images)
        else:
            strip = args.strip_components if args.strip_components is not None else STRIP_COMPONENTS.get(name.upper())
            if strip is None:
                raise ZSLError(f"--strip-components is needed for dataset {name} (known: CUB 6, SUN 7, AWA2 5)")
            paths, labels = read_res101_list(args.res101, args.images, strip)
        out = region_file(args.out, name)
        att_splits = args.att_splits
        if args.classes:  # the user's own description: att_splits.mat written first, beside the features

            att_splits = write_described_att_splits(args.classes, labels, os.path.dirname(out), args.split_seed)
        extract(paths, labels, att_splits, args.weights, out, size=args.size, batch=args.batch,
                dtype=args.dtype, device=args.device, w2v=args.w2v, progress=not args.quiet)
        if args.att_splits:
            shutil.copyfile(args.att_splits, os.path.join(os.path.dirname(out), "att_splits.mat.tmp"))
            os.replace(os.path.join(os.path.dirname(out), "att_splits.mat.tmp"),
                       os.path.join(os.path.dirname(out), "att_splits.mat"))
        print(f"wrote {out} and {os.path.join(os.path.dirname(out), 'res101.mat')}")

    return run_cli(body)
