"""Attribute attention over image regions: the pooling of DAZLE and SC-EGG."""
import torch

from zslfast import _ext
from zslfast.ops import reference
from zslfast.ops._checks import check_choice, check_matrix

REDUCE_MODES = reference.ATTENTION_REDUCE


def attention_pool(features, queries, normalize=True, reduce="mean"):
    """Attend from each attribute query over the regions of each image; returns ``(pooled, attn)``.

    ``features`` [B,C,R] (a [B,C,H,W] map is viewed as R = H·W regions), ``queries`` [A,C] (in SC-EGG
    Q = V·W2, formed by the caller). With F̂ the features with every region L2-normalised
    (x / max(‖x‖, 1e-12), as ``F.normalize``; skipped when ``normalize`` is False):

    - ``attn`` [B,A,R] = softmax over regions of Q·F̂_b (differentiable);
    - ``reduce="none"``: ``pooled`` = H [B,A,C], H_b = attn_b·F̂_bᵀ, one feature per attribute;
    - ``reduce="mean"``: ``pooled`` = g [B,C] = F̂_b·mean_i attn_b, the mean of H over attributes,
      computed without forming H (SC-EGG's dense "compressed" feature).

    The normalisation is folded into per-region scales, so no normalised copy of the features is
    made; the backward is fused and returns gradients for the queries always and for the features
    when they require grad.
    """
    check_choice("reduce", reduce, REDUCE_MODES)
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() == 4:
        features = features.flatten(2)
    if features.dim() != 3:
        raise ValueError(f"features must be [B,C,R] or [B,C,H,W], got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got {features.dtype}")
    check_matrix("queries", queries)
    if queries.shape[1] != features.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} channels but features have {features.shape[1]}")
    if queries.dtype != features.dtype or queries.device != features.device:
        raise ValueError(f"features and queries must share dtype and device: got {features.dtype} "
                         f"{features.device} and {queries.dtype} {queries.device}")
    if queries.shape[0] == 0 or features.shape[2] == 0:
        raise ValueError(f"attention_pool needs at least one query and one region, got {queries.shape[0]} "
                         f"queries and {features.shape[2]} regions")
    if _ext.use_ext(features):
        pooled, attn, _ = torch.ops.zslfast.attention_pool(features, queries, bool(normalize), reduce)
        return pooled, attn
    return reference.attention_pool(features, queries, normalize, reduce)
