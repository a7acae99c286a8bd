"""Region features (ResNet-101 feature maps, one C-vector per image region) for SC-EGG.

The file layout is the one SC-EGG's preprocessing writes, ``<root>/<DS>/feature_map_ResNet_101_<DS>.hdf5``:

| dataset | dtype, shape | meaning |
|---|---|---|
| ``feature_map`` | float32 or float16 (N, C, H, W) or (N, C, R) | region r = h·W + w |
| ``labels`` | integer (N,) | 0-based class ids |
| ``trainval_loc``, ``test_seen_loc``, ``test_unseen_loc`` | integer, usually **uint16** (n,) | 0-based |
| ``att``, ``original_att`` (optional) | float (K, A) | xlsa17's class attributes |
| ``w2v_att`` (optional) | float (A, d) | attribute word vectors |

Two storage modes (:class:`RegionFeatures`):

- ``memory``: one preallocated array filled block by block with ``read_direct``: peak memory is the
  file's size, not the 2x of reading it whole and then fancy-indexing copies per split (as SC-EGG's
  loader does). Splits stay index tensors.
- ``stream``: images read per batch from the open file (sorted, runs of consecutive images in one
  read, then reordered), for files larger than memory (SUN's 23 GB file on a 24 GB machine).
- ``auto`` (default): ``memory`` when the file takes under 60% of the available memory, else ``stream``.

A ``feature_map`` compressed with chunks spanning many images (what SC-EGG's ``--compression``
writes: h5py guesses chunks of ~900 images × 128 channels) cannot be read per image: every image
would decompress ~900 images' worth of data. Streaming such a file is refused with a pointer to
``python -m zslfast.data regions repack IN OUT [--dtype float16]``, which rewrites it with one image
per chunk. Every map is checked when the file is read, before any training (:meth:`RegionFeatures.scan`:
the whole file in blocks of images, streamed, so a NaN in one image's map or a corrupted
compressed chunk is one error line up front), and again per batch as it is used.

h5py is an optional dependency (``pip install "zslfast[regions]"``); everything else in zslfast
works without it.
"""
import argparse
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from zslfast.data.arrays import require_h5py
from zslfast.data.dataset import ZSLDataset
from zslfast.errors import ZSLError, run_cli

STORAGE_MODES = ("auto", "memory", "stream")
MAP_DTYPES = (np.float32, np.float16)
REQUIRED = ("feature_map", "labels", "trainval_loc", "test_seen_loc", "test_unseen_loc", "att")
LOCATIONS = {"trainval": "trainval_loc", "test_seen": "test_seen_loc", "test_unseen": "test_unseen_loc"}
MEMORY_FRACTION = 0.6  # auto: hold the maps in memory when they take under this share of MemAvailable


def region_file(root, name):
    """The path SC-EGG uses for dataset ``name`` under ``root``."""
    return os.path.join(root, name, f"feature_map_ResNet_101_{name}.hdf5")


def available_memory():
    """MemAvailable in bytes (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _runs(sorted_idx):
    """(start, stop, position) runs of consecutive values in a sorted index array."""
    if sorted_idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sorted_idx.size]])
    return [(int(sorted_idx[a]), int(sorted_idx[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


class RegionFeatures:
    """N images × C channels × R regions, in memory or streamed from an HDF5 file.

    Indexing with an index tensor (``features[idx]``) gives a view over those images (nothing is
    read); :meth:`read` returns the float32 tensor [n, C, R] of some of the view's images on the
    view's device. ``shape`` is (N, C, R) of the view.
    """

    def __init__(self, array=None, path=None, dataset="feature_map", index=None, device="cpu", check_finite=True):
        if (array is None) == (path is None):
            raise ValueError("RegionFeatures needs exactly one of array and path")
        self._array, self.path, self._dataset_name = array, path, dataset
        self._h5 = None
        self.device = torch.device(device)
        self.check_finite = check_finite
        if array is not None:
            n, c = array.shape[:2]
            r = int(np.prod(array.shape[2:]))
        else:
            with require_h5py().File(path, "r") as f:
                shape = f[dataset].shape
            n, c, r = shape[0], shape[1], int(np.prod(shape[2:]))
        self._full = (n, c, r)
        self.index = None if index is None else np.asarray(index, dtype=np.int64)

    @property
    def storage(self):
        return "memory" if self._array is not None else "stream"

    @property
    def shape(self):
        n, c, r = self._full
        return (n if self.index is None else int(self.index.size), c, r)

    def __len__(self):
        return self.shape[0]

    def _derive(self, index=None, device=None):
        out = object.__new__(RegionFeatures)
        out.__dict__.update(self.__dict__)
        out._h5 = None  # an h5py handle is per object (and per process)
        if index is not None:
            out.index = index
        if device is not None:
            out.device = torch.device(device)
        return out

    def __getitem__(self, idx):
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64).reshape(-1)
        base = idx if self.index is None else self.index[idx]
        return self._derive(index=base)

    def to(self, device):
        """The same images, read onto ``device``."""
        return self._derive(device=device)

    def _file_rows(self, idx):
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"image index out of range [0, {len(self)})")
        return idx if self.index is None else self.index[idx]

    def _dataset(self):
        if self._h5 is None:
            self._h5 = require_h5py().File(self.path, "r")  # opened lazily: h5py handles cannot be pickled
        return self._h5[self._dataset_name]

    def _read_rows(self, rows):
        """float32 numpy [n, C, R] of file rows ``rows`` (any order, repeats allowed)."""
        n, c, r = self._full
        if self._array is not None:
            return np.asarray(self._array[rows], dtype=np.float32).reshape(rows.size, c, r)
        uniq, inverse = np.unique(rows, return_inverse=True)
        ds = self._dataset()
        buf = np.empty((uniq.size,) + ds.shape[1:], dtype=ds.dtype)
        for start, stop, pos in _runs(uniq):
            ds.read_direct(buf, np.s_[start:stop], np.s_[pos:pos + stop - start])
        return buf.reshape(uniq.size, c, r)[inverse].astype(np.float32, copy=False)

    def read(self, idx=None):
        """float32 [n, C, R] of the view's images ``idx`` (all when None), on the view's device."""
        rows = self._file_rows(np.arange(len(self)) if idx is None else idx)
        try:
            out = torch.from_numpy(np.ascontiguousarray(self._read_rows(rows)))
        except OSError as exc:  # h5py: a corrupted compressed chunk, a truncated file
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ZSLError(f"{self.path}: cannot read the feature maps of images {int(rows.min())}-{int(rows.max())} "
                           f"({first}): the file is damaged") from None
        if self.check_finite and not torch.isfinite(out).all():
            bad = rows[(~torch.isfinite(out)).flatten(1).any(1).numpy()]
            raise ZSLError(f"{self.path or 'region features'}: feature maps of images {bad[:5].tolist()} "
                           "contain NaN/inf values")
        return out.to(self.device)

    def scan(self, block_size=256):
        """Read every image once, in blocks (streamed from the file when stored there): a NaN/inf map
        or an unreadable block is a :class:`ZSLError` naming the images."""
        for _ in self.blocks(block_size):
            pass

    def blocks(self, block_size=256):
        """(positions, float32 tensor) over the view in order, ``block_size`` images at a time."""
        for start in range(0, len(self), block_size):
            pos = np.arange(start, min(len(self), start + block_size))
            yield pos, self.read(pos)

    def close(self):
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def __repr__(self):
        src = self.path or "memory"
        return f"RegionFeatures({self.shape[0]}×{self.shape[1]}×{self.shape[2]}, {self.storage}, {src})"


@dataclass
class RegionDataset(ZSLDataset):
    """A :class:`ZSLDataset` whose features are region maps (:class:`RegionFeatures`), with the
    attribute word vectors ``w2v`` [A, d] and, for synthetic data, the planted ``footprints``."""

    w2v: torch.Tensor = None
    footprints: dict = field(default=None, repr=False)

    def _check_features(self):
        f = self.features
        if not isinstance(f, RegionFeatures):
            self._fail(f"region features must be a RegionFeatures, got {type(f).__name__}")
        if self.w2v is not None:
            if self.w2v.dim() != 2 or self.w2v.shape[0] != self.attributes.shape[1]:
                self._fail(f"attribute word vectors must be [A={self.attributes.shape[1]}, d], "
                           f"got shape {tuple(self.w2v.shape)}")
            if not torch.isfinite(self.w2v).all():
                self._fail("attribute word vectors contain NaN/inf values")

    @property
    def regions(self):
        return self.features.shape[2]

    def normalized(self, method="none"):
        if method != "none":
            raise ZSLError(f"{self.name}: region features take no feature normalisation (got {method!r}); "
                           "SC-EGG normalises each region inside its attention")
        return self

    def pooled(self, block=256):
        """The same images as a :class:`ZSLDataset` of globally average-pooled features [N, C] (the
        usual ResNet-101 image feature; the baseline SC-EGG's dense features are compared with)."""
        feats = torch.cat([x.mean(2) for _, x in self.features.blocks(block)])
        return ZSLDataset(name=f"{self.name}[pooled]", features=feats, labels=self.labels, attributes=self.attributes,
                          class_names=self.class_names, splits=self.splits, source=self.source,
                          info={**self.info, "pooling": "global average"})

    def summary(self):
        n, c, r = self.features.shape
        s = self.split_sizes()
        return (f"{self.name}: {n} images × {c} channels × {r} regions ({self.features.storage}), "
                f"{self.num_classes} classes ({len(self.seen_classes)} seen / {len(self.unseen_classes)} unseen), "
                f"{self.attribute_dim} attributes; splits {s}")


# ---------------------------------------------------------------------------------------------- reading
def _fail(path, problem):
    raise ZSLError(f"{path}: {problem}")


def _open(path):
    h5py = require_h5py()
    if not os.path.isfile(path):
        _fail(path, "file not found (region features: see docs/data.md, 'Region features')")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        _fail(path, f"cannot read as an HDF5 file ({exc})")


def _dataset_of(f, key, path):
    """The HDF5 dataset ``key`` of ``f`` (a group or other object of that name is refused)."""
    ds = f[key]
    if not isinstance(ds, require_h5py().Dataset):
        _fail(path, f"'{key}' must be an HDF5 dataset, got a {type(ds).__name__}")
    return ds


def _vector(f, key, path, integer=True):
    ds = _dataset_of(f, key, path)
    if ds.ndim != 1 and not (ds.ndim == 2 and 1 in ds.shape):
        _fail(path, f"'{key}' must be a vector, got shape {ds.shape}")
    v = np.asarray(ds[()]).reshape(-1)
    if integer and not np.issubdtype(v.dtype, np.integer):
        _fail(path, f"'{key}' must hold integers, got {v.dtype}")
    return v.astype(np.int64)  # uint16 locations would wrap on any arithmetic


def _float_matrix(f, key, path):
    m = np.asarray(_dataset_of(f, key, path)[()])
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.floating):
        _fail(path, f"'{key}' must be a 2-D float matrix, got shape {m.shape} dtype {m.dtype}")
    if not np.isfinite(m).all():
        _fail(path, f"'{key}' contains NaN/inf values")
    return m


def chunked_across_images(ds):
    """True when ``ds`` is chunked with chunks spanning more than one image."""
    return ds.chunks is not None and ds.chunks[0] > 1


def _choose_storage(storage, nbytes, ds, path):
    if storage not in STORAGE_MODES:
        raise ZSLError(f"region storage must be one of {', '.join(STORAGE_MODES)}, got {storage!r}")
    if storage == "auto":
        avail = available_memory()
        storage = "memory" if avail is None or nbytes < MEMORY_FRACTION * avail else "stream"
    if storage == "stream" and chunked_across_images(ds):
        _fail(path, f"'feature_map' is chunked across images (chunks {ds.chunks}), so it cannot be read per "
                    f"batch; rewrite it with one image per chunk: python -m zslfast.data regions repack {path} "
                    "OUT.hdf5 [--dtype float16]")
    return storage


def _read_all(ds, block=None):
    """The whole dataset into one preallocated array, block by block (chunk-row aligned)."""
    out = np.empty(ds.shape, dtype=ds.dtype)
    step = block or (ds.chunks[0] * max(1, 256 // ds.chunks[0]) if ds.chunks else 256)
    for start in range(0, ds.shape[0], step):
        stop = min(ds.shape[0], start + step)
        ds.read_direct(out, np.s_[start:stop], np.s_[start:stop])
    return out


def read_region_hdf5(path, storage="auto", w2v="auto", name=None, att_splits=None, device="cpu"):
    """Read a region-feature HDF5 file as a :class:`RegionDataset`.

    Args:
        path: the ``.hdf5`` file.
        storage: ``auto``, ``memory`` or ``stream`` (module docstring).
        w2v: attribute word vectors: ``auto`` (the file's ``w2v_att``), a ``.npy`` path or ``random``
            (see :func:`zslfast.data.w2v.resolve_w2v`).
        name: the dataset name (default: the folder's name).
        att_splits: an xlsa17 ``att_splits.mat`` giving class names and the class-disjoint
            ``train``/``val`` split; by default the one beside the file, when present. Its ``att``
            and locations must agree with the file.

    Raises:
        ZSLError: one line naming the file and the problem (missing dataset, wrong shape or dtype,
            labels or locations out of range, overlapping splits, NaN/inf attributes, a streamed
            file chunked across images).
    """
    from zslfast.data.w2v import resolve_w2v

    name = name or os.path.basename(os.path.dirname(os.path.abspath(path))) or "regions"
    with _open(path) as f:
        for key in REQUIRED:
            if key not in f:
                _fail(path, f"missing dataset '{key}' (expected {', '.join(REQUIRED)})")
        ds = _dataset_of(f, "feature_map", path)
        if ds.ndim not in (3, 4):
            _fail(path, f"'feature_map' must be (N, C, H, W) or (N, C, R), got shape {ds.shape}")
        if ds.dtype not in MAP_DTYPES:
            _fail(path, f"'feature_map' must be float32 or float16, got {ds.dtype}")
        n = ds.shape[0]
        labels = _vector(f, "labels", path)
        if labels.size != n:
            _fail(path, f"'labels' has {labels.size} entries for {n} feature maps")
        att = _float_matrix(f, "att", path)
        k = att.shape[0]
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            _fail(path, f"'labels' must be 0-based class ids in [0, {k}) (the rows of 'att'), got range "
                        f"[{labels.min()}, {labels.max()}]")
        splits = {}
        for split, key in LOCATIONS.items():
            loc = _vector(f, key, path)
            if loc.size and (loc.min() < 0 or loc.max() >= n):
                _fail(path, f"'{key}' must hold 0-based image indices in [0, {n}), got range "
                            f"[{loc.min()}, {loc.max()}]")
            splits[split] = torch.from_numpy(loc)
        file_w2v = _float_matrix(f, "w2v_att", path) if "w2v_att" in f else None
        nbytes = int(np.prod(ds.shape)) * ds.dtype.itemsize
        mode = _choose_storage(storage, nbytes, ds, path)
        try:
            array = _read_all(ds) if mode == "memory" else None
        except OSError as exc:  # a corrupted compressed chunk, a truncated file
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            _fail(path, f"cannot read 'feature_map' ({first}): the file is damaged")
    names = [f"class_{i:03d}" for i in range(k)]
    side = att_splits or os.path.join(os.path.dirname(os.path.abspath(path)), "att_splits.mat")
    if os.path.isfile(side):
        names = _merge_att_splits(side, path, att, splits, names)
    vectors, w2v_info = resolve_w2v(w2v, att.shape[1], file_w2v, source=path)
    feats = RegionFeatures(array=array) if array is not None else RegionFeatures(path=path)
    feats.scan()  # every map, before any training: NaN/inf or damaged chunks are one line now, not mid-run
    return RegionDataset(name=name, features=feats.to(device), labels=torch.from_numpy(labels),
                         attributes=torch.from_numpy(att.astype(np.float32)), class_names=names,
                         splits=splits, source=path, w2v=vectors,
                         info={"format": "regions-hdf5", "storage": mode, "w2v": w2v_info})


def _merge_att_splits(side, path, att, splits, names):
    """Class names and the train/val split from an att_splits.mat beside the HDF5, checked against it."""
    from zslfast.data.xlsa17 import read_att_splits

    meta = read_att_splits(side)
    if tuple(meta["attributes"].shape) != att.shape or not np.allclose(meta["attributes"].numpy(), att, atol=1e-5):
        _fail(path, f"'att' differs from the one in {side} (shape {tuple(meta['attributes'].shape)} vs {att.shape})")
    for split in LOCATIONS:
        if not torch.equal(meta["splits"][split].sort().values, splits[split].sort().values):
            _fail(path, f"'{LOCATIONS[split]}' differs from the one in {side}")
    for split in ("train", "val"):
        if split in meta["splits"]:
            splits[split] = meta["splits"][split]
    return meta["class_names"]


def load_regions(root, name, **kwargs):
    """:func:`read_region_hdf5` of ``<root>/<name>/feature_map_ResNet_101_<name>.hdf5``."""
    return read_region_hdf5(region_file(root, name), name=name, **kwargs)


# ---------------------------------------------------------------------------------------------- writing
def _atomic_h5(path, write):
    """Write an HDF5 file through a temporary name in the same folder, then rename."""
    h5py = require_h5py()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _location_dtype(n):
    return np.uint16 if n < 2 ** 16 else np.uint32  # uint16 as SC-EGG writes, where N allows


def write_region_hdf5(path, features, labels, splits, attributes, w2v=None, original_att=None, dtype="float32",
                      grid=None, chunks="image", compression=None, block=256):
    """Write region features in SC-EGG's layout, atomically.

    Args:
        features: anything indexable by a slice of images giving [n, C, R] (a numpy array, a tensor
            or a :class:`RegionFeatures`), so large data is written block by block.
        labels: 0-based class ids [N]; splits: dict with trainval / test_seen / test_unseen indices.
        attributes: [K, A]; w2v: [A, d] or None; original_att: [K, A] or None.
        dtype: ``float32`` or ``float16`` for the maps.
        grid: (H, W) to store maps as (N, C, H, W) like SC-EGG; None stores (N, C, R).
        chunks: ``"image"`` (one image per chunk: streamable), None (contiguous) or an explicit tuple.
        compression: an h5py compression filter (e.g. ``"gzip"``) or None.
    """
    def as_np(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    dtype = np.dtype(dtype)
    if dtype.type not in MAP_DTYPES:
        raise ZSLError(f"feature map dtype must be float32 or float16, got {dtype}")
    n, c = features.shape[:2]
    r = int(np.prod(features.shape[2:]))  # a [N, C, H, W] input has H·W regions
    shape = (n, c) + (tuple(grid) if grid else (r,))
    if int(np.prod(shape[2:])) != r:
        raise ZSLError(f"grid {grid} does not hold {r} regions")

    def read(a, b):
        if isinstance(features, RegionFeatures):
            return features.read(np.arange(a, b)).numpy()
        return as_np(features[a:b])

    def write(f):
        chunk_arg = (1,) + shape[1:] if chunks == "image" else chunks
        ds = f.create_dataset("feature_map", shape=shape, dtype=dtype, chunks=chunk_arg, compression=compression)
        for a in range(0, n, block):
            b = min(n, a + block)
            ds[a:b] = read(a, b).reshape((b - a,) + shape[1:]).astype(dtype, copy=False)
        f.create_dataset("labels", data=as_np(labels).astype(np.int64))
        for split, key in LOCATIONS.items():
            f.create_dataset(key, data=as_np(splits[split]).astype(_location_dtype(n)))
        f.create_dataset("att", data=as_np(attributes).astype(np.float64))
        f.create_dataset("original_att", data=as_np(attributes if original_att is None else original_att).astype(np.float64))
        if w2v is not None:
            f.create_dataset("w2v_att", data=as_np(w2v).astype(np.float64))

    _atomic_h5(path, write)
    return path


def write_region_dataset(dataset, path, **kwargs):
    """:func:`write_region_hdf5` of a :class:`RegionDataset`."""
    return write_region_hdf5(path, dataset.features, dataset.labels, dataset.splits, dataset.attributes,
                             w2v=dataset.w2v, **kwargs)


def repack(src, dst, dtype=None):
    """Rewrite ``src`` with one image per chunk (streamable), optionally as float16, reading
    chunk-row-aligned blocks so that each compressed chunk is decompressed once."""
    with _open(src) as f:
        if "feature_map" not in f:
            _fail(src, "missing dataset 'feature_map'")
        ds = f["feature_map"]
        out_dtype = np.dtype(dtype) if dtype else ds.dtype
        if out_dtype.type not in MAP_DTYPES:
            raise ZSLError(f"--dtype must be float32 or float16, got {out_dtype}")
        step = ds.chunks[0] * max(1, 64 // ds.chunks[0]) if ds.chunks else 64

        def write(g):
            out = g.create_dataset("feature_map", shape=ds.shape, dtype=out_dtype, chunks=(1,) + ds.shape[1:])
            for a in range(0, ds.shape[0], step):
                b = min(ds.shape[0], a + step)
                out[a:b] = ds[a:b].astype(out_dtype, copy=False)
            for key in f:
                if key != "feature_map":
                    g.create_dataset(key, data=f[key][()])
            for key, value in f.attrs.items():
                g.attrs[key] = value
            g.attrs["repacked_from"] = os.path.abspath(src)

        _atomic_h5(dst, write)
    return dst


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zslfast.data regions",
                                description="Region-feature HDF5 files (SC-EGG layout).")
    sub = p.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("repack", help="rewrite a file with one image per chunk (streamable)")
    rp.add_argument("src")
    rp.add_argument("dst")
    rp.add_argument("--dtype", choices=["float32", "float16"], help="feature-map dtype of the output")
    ip = sub.add_parser("info", help="validate a file and print what it holds")
    ip.add_argument("path")
    ip.add_argument("--storage", default="auto", choices=STORAGE_MODES)
    ip.add_argument("--w2v", default="auto", help="attribute word vectors: auto (the file's w2v_att), random, or a "
                                                  ".npy path (the package's extractor writes none unless given --w2v)")
    args = p.parse_args(argv)

    def body():
        if args.command == "repack":
            repack(args.src, args.dst, args.dtype)
            print(f"wrote {args.dst} (one image per chunk)")
        else:
            print(read_region_hdf5(args.path, storage=args.storage, w2v=args.w2v).summary())

    return run_cli(body)
