"""Synthetic region features: the embedded default for region-based methods (SC-EGG), where attention
over regions matters and its success can be measured.

Structure (``../shared/reference/sc_egg_spec.md`` §3.1):

- **attribute prototypes** U_i ∈ R^C: sparse, non-negative, unit norm (ReLU of a Gaussian, the top
  ``sparsity`` share of channels kept);
- **word vectors** W_i = Π·U_i + σ·ξ (d = 300): informative but imperfect, as real word2vec is. With
  ``like=NAME`` and DAZLE's real vectors available, the real vectors are used and the prototypes are
  made from them instead (U_i from a fixed random map of W_i plus an independent part, so that a zero
  word vector, SUN's row 88, still gets a prototype);
- **class attributes** a_k: NAME's real ``att`` with ``like`` (presence uses it rescaled per attribute
  to [0, 1]), else sparse correlated attributes like :func:`zslfast.data.make_synthetic`'s;
- **each image** n of class k: attribute i present with probability clip(ρ·a_ki, 0, 1), planted at a
  random region (plus, at half weight, one grid neighbour) with amplitude s₀·LogNormal(0, 0.2);
  clutter prototypes tied to no attribute at random regions; dense |N(0, σ_bg²)| background; a weak
  class "style" vector; the sum passed through a ReLU.

Unseen classes are made of the same parts, so zero-shot transfer works through the attributes.
Global average pooling dilutes each attribute by its footprint's share of the R regions; attention
recovers it. The planted footprints are kept (``dataset.footprints``: region and neighbour per image
and attribute, −1 where absent). Every image is generated from ``np.random.default_rng([seed, n])``,
so image n is the same whatever else is generated (:meth:`SyntheticRegions.image`).

    python -m zslfast.data synthetic-regions [--like SUN|CUB|AWA2|...] --out DIR [--seed N]

writes ``DIR/<NAME>/feature_map_ResNet_101_<NAME>.hdf5`` and ``att_splits.mat`` (``NAME`` as for
:func:`zslfast.data.synthetic.folder_name`, or ``--name``), loadable with ``python -m zslfast.train --method scegg
--dataset NAME --data-root DIR``.
"""
import os

import numpy as np
import torch

from zslfast.data.regions import RegionDataset, RegionFeatures, region_file, write_region_dataset
from zslfast.data.synthetic import (check_folder_name, folder_name, synthetic_layout, synthetic_parser, synthetic_splits, with_val_partition,
                                    write_att_splits)
from zslfast.data.w2v import find_shared_w2v, load_w2v_file
from zslfast.errors import run_cli

WORD_DIM = 300


def _sparse_unit_rows(g, sparsity):
    """ReLU, keep each row's top ``sparsity`` share of entries, normalise rows to unit length."""
    g = np.maximum(g, 0)
    k = max(1, int(round(sparsity * g.shape[1])))
    cut = np.partition(g, g.shape[1] - k, axis=1)[:, g.shape[1] - k][:, None]
    g = np.where(g >= cut, g, 0)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


class SyntheticRegions:
    """The generator: class-level structure drawn once, images drawn on demand (module docstring)."""

    def __init__(self, attributes, labels, seed=0, channels=256, grid=(7, 7), word_vectors=None, presence=1.0,
                 amplitude=1.0, clutter=3, clutter_prototypes=16, clutter_amplitude=0.8, background=0.03,
                 style=0.1, word_noise=0.3, sparsity=0.1, neighbour=True):
        rng = np.random.default_rng([seed, 1])
        att = np.asarray(attributes, dtype=np.float64)
        k, a = att.shape
        self.seed, self.labels, self.grid = seed, np.asarray(labels), tuple(grid)
        self.channels, self.regions = channels, grid[0] * grid[1]
        lo, hi = att.min(0), att.max(0)
        self.presence = np.clip(presence * (att - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)  # [K, A]
        if word_vectors is not None:
            w = np.asarray(word_vectors, dtype=np.float64)
            wn = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
            mix = wn @ rng.standard_normal((w.shape[1], channels))
            self.prototypes = _sparse_unit_rows(mix + 0.5 * rng.standard_normal((a, channels)), sparsity)
            self.word_vectors = w
        else:
            self.prototypes = _sparse_unit_rows(rng.standard_normal((a, channels)), sparsity)
            proj = rng.standard_normal((channels, WORD_DIM)) / np.sqrt(channels)
            clean = self.prototypes @ proj
            clean /= np.linalg.norm(clean, axis=1, keepdims=True)
            self.word_vectors = clean + word_noise * rng.standard_normal((a, WORD_DIM)) / np.sqrt(WORD_DIM)
        self.clutter_protos = _sparse_unit_rows(rng.standard_normal((clutter_prototypes, channels)), sparsity)
        self.styles = style * _sparse_unit_rows(rng.standard_normal((k, channels)), 3 * sparsity)
        self.amplitude, self.clutter, self.clutter_amplitude = amplitude, clutter, clutter_amplitude
        self.background, self.neighbour = background, neighbour

    def _neighbours(self, regions, rng):
        h, w = self.grid
        rows, cols = regions // w, regions % w
        step = rng.integers(0, 4, size=regions.size)
        dr = np.array([-1, 1, 0, 0])[step]
        dc = np.array([0, 0, -1, 1])[step]
        rr, cc = np.clip(rows + dr, 0, h - 1), np.clip(cols + dc, 0, w - 1)
        out = rr * w + cc
        return np.where(out == regions, -1, out)  # at a border the step may fall off: no neighbour

    def image(self, n):
        """(float32 map [C, R], footprint regions [A], neighbour regions [A]) of image n (−1 = none)."""
        rng = np.random.default_rng([self.seed, int(n)])
        label = self.labels[n]
        a, r = self.prototypes.shape[0], self.regions
        present = rng.random(a) < self.presence[label]
        where = rng.integers(0, r, size=a)
        amp = self.amplitude * np.exp(0.2 * rng.standard_normal(a))
        near = self._neighbours(where, rng) if self.neighbour else np.full(a, -1)
        fmap = np.abs(self.background * rng.standard_normal((r, self.channels)))
        fmap += self.styles[label]
        idx = np.flatnonzero(present)
        np.add.at(fmap, where[idx], amp[idx, None] * self.prototypes[idx])
        has_near = idx[near[idx] >= 0]
        np.add.at(fmap, near[has_near], 0.5 * amp[has_near, None] * self.prototypes[has_near])
        spots = rng.integers(0, r, size=self.clutter)
        kinds = rng.integers(0, self.clutter_protos.shape[0], size=self.clutter)
        np.add.at(fmap, spots, self.clutter_amplitude * self.clutter_protos[kinds])
        footprint = np.where(present, where, -1)
        neighbour = np.where(present, near, -1)
        return np.maximum(fmap, 0).T.astype(np.float32), footprint.astype(np.int16), neighbour.astype(np.int16)


def make_synthetic_regions(like=None, seed=0, num_classes=50, num_unseen=10, attribute_dim=64, images_per_class=60,
                           test_seen_fraction=0.2, channels=256, grid=(7, 7), shared_root=None, **structure):
    """Generate a :class:`RegionDataset` held in memory (deterministic for a given seed).

    Args:
        like: None for the built-in default (50 classes × 60 images, C = 256, 7×7 regions, A = 64),
            or a dataset name / att_splits.mat path whose real attributes, class names, class count,
            split sizes and (where staged in ``../shared/data``) DAZLE word vectors are used.
        channels, grid: region feature size (C) and the H×W region grid (R = H·W).
        structure: the generator's knobs (:class:`SyntheticRegions`): presence, amplitude, clutter,
            clutter_amplitude, background, style, word_noise, sparsity, neighbour.
    """
    rng = np.random.default_rng(seed)
    layout = synthetic_layout(rng, like, num_classes, num_unseen, attribute_dim, images_per_class,
                              test_seen_fraction, shared_root)
    att, names, name = layout["attributes"], layout["class_names"], layout["name"]
    word_vectors, w2v_source = None, "generated (noisy view of the prototypes)"
    w2v_path = find_shared_w2v(layout["dataset"], shared_root) if layout["dataset"] else None
    if w2v_path:
        word_vectors, w2v_source = load_w2v_file(w2v_path, att.shape[1]), w2v_path
    source = f"synthetic regions on {layout['path']}" if like is not None else "synthetic regions (built-in default)"
    labels, seen, trainval, test_seen, test_unseen = synthetic_splits(rng, *layout["split_sizes"])
    gen = SyntheticRegions(att, labels, seed=seed, channels=channels, grid=grid, word_vectors=word_vectors,
                           **structure)
    n, a = labels.size, att.shape[1]
    maps = np.empty((n, channels, gen.regions), dtype=np.float32)
    footprint = np.empty((n, a), dtype=np.int16)
    neighbour = np.empty((n, a), dtype=np.int16)
    for i in range(n):
        maps[i], footprint[i], neighbour[i] = gen.image(i)
    splits = with_val_partition(rng, seen, labels, trainval, test_seen, test_unseen)
    return RegionDataset(
        name=name, features=RegionFeatures(array=maps), labels=torch.from_numpy(labels.astype(np.int64)),
        attributes=torch.from_numpy(att.astype(np.float32)), class_names=list(names),
        splits={k: torch.from_numpy(v.astype(np.int64)) for k, v in splits.items()}, source=source,
        w2v=torch.from_numpy(gen.word_vectors.astype(np.float32)),
        footprints={"region": torch.from_numpy(footprint), "neighbour": torch.from_numpy(neighbour),
                    "prototypes": torch.from_numpy(gen.prototypes.astype(np.float32))},
        info={"synthetic": {"like": like, "seed": seed, "channels": channels, "grid": list(grid)},
              "w2v": {"source": w2v_source}})


def main(argv=None):
    p = synthetic_parser("python -m zslfast.data synthetic-regions",
                         "Write synthetic region features in SC-EGG's HDF5 layout.")
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--grid", type=int, nargs=2, default=(7, 7), metavar=("H", "W"))
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    args = p.parse_args(argv)

    def body():
        data = make_synthetic_regions(like=args.like, seed=args.seed, channels=args.channels, grid=tuple(args.grid))
        path = region_file(args.out, args.name and check_folder_name(args.name) or folder_name(data.name))
        write_region_dataset(data, path, dtype=args.dtype, grid=tuple(args.grid))
        write_att_splits(data, os.path.dirname(path))
        print(f"wrote {path}: {data.summary()}")
        print(f"train on it: python -m zslfast.train --method scegg --dataset {os.path.basename(os.path.dirname(path))} "
              f"--data-root {args.out}")

    return run_cli(body)
