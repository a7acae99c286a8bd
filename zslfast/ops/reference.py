"""Pure-PyTorch reference implementations of the zslfast operators.

These are the specification of every operator, the fallback when the compiled extension is absent,
and the oracle the tests compare the extension against. They favour clarity over speed, except that
``nearest_prototype`` keeps the blocked, O(N + C + block) memory contract.
"""
import torch

NORM_EPS = 1e-12  # as torch.nn.functional.normalize
FREIA_ATAN = 0.636  # FrEIA's stand-in for 2/pi, kept for parity with GSMFlow's flows


def _normalize(x):
    return x / x.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)


def _safe_sqrt(d):
    # sqrt with gradient 0 (not inf) where the distance is exactly 0, as torch.cdist does.
    pos = d > 0
    return torch.where(pos, torch.where(pos, d, torch.ones_like(d)).sqrt(), torch.zeros_like(d))


def pairwise_distance(x, y, metric="sqeuclidean"):
    if metric == "dot":
        return x @ y.T
    if metric == "cosine":
        return 1 - _normalize(x) @ _normalize(y).T
    d = ((x * x).sum(1, keepdim=True) + (y * y).sum(1) - 2 * (x @ y.T)).clamp_min(0)
    return d if metric == "sqeuclidean" else _safe_sqrt(d)


def default_block_rows(num_prototypes, budget=1 << 20):
    """Rows per block so that one block of scores holds about ``budget`` elements."""
    return max(1, budget // max(1, num_prototypes))


def nearest_prototype(x, prototypes, metric="cosine", block_rows=None):
    block_rows = block_rows or default_block_rows(prototypes.shape[0])
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], block_rows):
        d = pairwise_distance(x[start:start + block_rows], prototypes, metric)
        out[start:start + block_rows] = d.argmax(1) if metric == "dot" else d.argmin(1)
    return out


def similarity(x, y, metric):
    """cosine similarity, or minus the squared euclidean distance."""
    if metric == "cosine":
        return _normalize(x) @ _normalize(y).T
    return -pairwise_distance(x, y, "sqeuclidean")


def transition_matrix(x, y, temperature=1.0, metric="cosine", exclude_self=False):
    s = similarity(x, y, metric) / temperature
    if exclude_self:
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        s = s.masked_fill(eye, float("-inf"))
    return torch.softmax(s, dim=1)


def random_walk_landing(centers, points, steps, temperature=1.0, metric="cosine"):
    p_cx = transition_matrix(centers, points, temperature, metric)
    p_xx = transition_matrix(points, points, temperature, metric, exclude_self=True)
    p_xc = transition_matrix(points, centers, temperature, metric)
    q, out = p_cx, [p_cx @ p_xc]
    for _ in range(steps):
        q = q @ p_xx
        out.append(q @ p_xc)
    return torch.stack(out)


def random_walk_landing_dense(centers, points, steps, temperature=1.0, metric="cosine"):
    """The formulation of the original GRW code (IGCZSL ``rw_loss.py``), kept as a baseline for tests
    and benchmarks: one similarity matrix S_xc serves P_xc and (transposed) P_cx, and P_xx^t is
    formed explicitly, starting from the identity and right-multiplied by P_xx after every step,
    the last product included although it is never used: steps+1 M×M×M GEMMs, O(steps·M³).
    Use :func:`random_walk_landing`, which gives the same values in O(steps·K·M²).
    """
    s_xc = similarity(points, centers, metric) / temperature
    p_xc = torch.softmax(s_xc, dim=1)
    p_cx = torch.softmax(s_xc.T, dim=1)
    p_xx = transition_matrix(points, points, temperature, metric, exclude_self=True)
    power = torch.eye(points.shape[0], dtype=points.dtype, device=points.device)
    out = []
    for _ in range(steps + 1):
        out.append(p_cx @ power @ p_xc)
        power = power @ p_xx
    return torch.stack(out)


def clamp_log_scale(s_raw, clamp=1.0, clamp_mode="atan"):
    """The soft clamp applied to raw log-scales in affine coupling."""
    if clamp_mode == "atan":
        return clamp * FREIA_ATAN * torch.atan(s_raw)
    if clamp_mode == "atan_scaled":
        return clamp * FREIA_ATAN * torch.atan(s_raw / clamp)
    if clamp_mode == "tanh":
        return clamp * torch.tanh(s_raw / clamp)
    return s_raw


def affine_coupling(x, s_raw, t, clamp=1.0, clamp_mode="atan", reverse=False):
    s = clamp_log_scale(s_raw, clamp, clamp_mode)
    if reverse:
        return (x - t) * torch.exp(-s), -s.sum(1)
    return x * torch.exp(s) + t, s.sum(1)


ATTENTION_REDUCE = ("mean", "none")


def attention_pool(features, queries, normalize=True, reduce="mean"):
    """Attribute attention over regions (DAZLE / SC-EGG), written out with every intermediate.

    features [B,C,R], queries [A,C]. F̂ = features with each region (column) L2-normalised when
    ``normalize``; attn = softmax_r(Q·F̂_b) [B,A,R]; ``reduce="none"`` returns H = attn·F̂ᵀ
    [B,A,C], ``"mean"`` the attribute-mean pooled feature F̂·mean_i(attn) [B,C].
    """
    fh = features / features.norm(dim=1, keepdim=True).clamp_min(NORM_EPS) if normalize else features
    attn = torch.softmax(torch.einsum("ac,bcr->bar", queries, fh), dim=-1)
    if reduce == "none":
        return torch.einsum("bar,bcr->bac", attn, fh), attn
    return torch.einsum("br,bcr->bc", attn.mean(1), fh), attn
