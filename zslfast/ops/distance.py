"""Pairwise distances and nearest-prototype search."""
import torch

from zslfast import _ext
from zslfast.ops import reference
from zslfast.ops._checks import DISTANCE_METRICS, check_choice, check_pair


def pairwise_distance(x, y, metric="sqeuclidean"):
    """Distances between the rows of ``x`` [N,D] and ``y`` [M,D], as an [N,M] tensor.

    Args:
        x, y: floating-point matrices with the same feature size D, dtype and device.
        metric: ``"sqeuclidean"`` (‖x−y‖²), ``"euclidean"`` (‖x−y‖, gradient 0 at distance 0),
            ``"cosine"`` (1 − cosine similarity; zero rows count as similarity 0) or ``"dot"``
            (the plain inner product x·y, a similarity rather than a distance).

    Differentiable in ``x`` and ``y``. Runs the fused extension kernel (one GEMM plus one pass
    over the result) where available, else :func:`zslfast.ops.reference.pairwise_distance`.
    """
    check_choice("metric", metric, DISTANCE_METRICS)
    check_pair(x, y)
    if _ext.use_ext(x):
        return torch.ops.zslfast.pairwise_distance(x, y, metric)
    return reference.pairwise_distance(x, y, metric)


def nearest_prototype(x, prototypes, metric="cosine", block_rows=None):
    """Index of the closest prototype for every row of ``x``: a LongTensor [N].

    ``prototypes`` is [C,D]. "Closest" is the smallest distance under ``metric`` (see
    :func:`pairwise_distance`), or the largest inner product for ``"dot"``; ties go to the lowest
    index. Rows are processed in blocks of ``block_rows`` (default: about 2**20 scores per block),
    so memory is O(N + C + block), never N×C. Not differentiable.
    """
    check_choice("metric", metric, DISTANCE_METRICS)
    check_pair(x, prototypes, "x", "prototypes")
    if prototypes.shape[0] == 0 and x.shape[0] > 0:
        raise ValueError("nearest_prototype needs at least one prototype")
    if block_rows is None:
        block_rows = reference.default_block_rows(prototypes.shape[0])
    elif block_rows <= 0:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    with torch.no_grad():
        if _ext.use_ext(x):
            return torch.ops.zslfast.nearest_prototype(x, prototypes, metric, block_rows)
        return reference.nearest_prototype(x, prototypes, metric, block_rows)
