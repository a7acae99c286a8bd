"""Independent formulations of the operators, the oracles of the operator tests.

Written from the definitions in DESIGN.md with other primitives than ``zslfast.ops.reference``
(which is the fallback under test when ``ZSLFAST_BACKEND=torch``): explicit broadcast differences
instead of the ‖x‖² + ‖y‖² − 2xy GEMM identity, ``F.cosine_similarity`` instead of normalised
GEMMs, ``log_softmax`` with masking by −inf, explicit matrix powers for the walks, and the clamp
formulas written out. Everything is evaluated in float64.
"""
import math

import torch
import torch.nn.functional as F


def distance(x, y, metric):
    x, y = x.double(), y.double()
    if metric == "dot":
        return torch.einsum("nd,md->nm", x, y)
    if metric == "cosine":
        return 1 - F.cosine_similarity(x[:, None, :], y[None, :, :], dim=2, eps=1e-300)
    sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(2)
    return sq if metric == "sqeuclidean" else sq.sqrt()


def distance_scale(x, y, metric):
    """A per-entry magnitude for error bounds: what rounding in the inputs' dtype scales with."""
    nx, ny = x.double().norm(dim=1)[:, None], y.double().norm(dim=1)[None, :]
    if metric == "sqeuclidean":
        return nx ** 2 + ny ** 2
    if metric == "euclidean":
        return nx + ny
    if metric == "dot":
        return nx * ny
    return torch.ones_like(nx * ny)


def log_transition(x, y, temperature, metric, exclude_self=False):
    """log P[i, j] = log softmax_j(sim(x_i, y_j) / T), −inf on a masked diagonal."""
    sim = (1 - distance(x, y, "cosine")) if metric == "cosine" else -distance(x, y, "sqeuclidean")
    logits = sim / temperature
    if exclude_self:
        logits = logits.masked_fill(torch.eye(x.shape[0], dtype=torch.bool, device=x.device), float("-inf"))
    return torch.log_softmax(logits, dim=1)


def walk(centers, points, steps, temperature, metric):
    """T_t = P_cx · P_xx^t · P_xc by explicit matrix powers, [steps+1, K, K]."""
    p_cx = log_transition(centers, points, temperature, metric).exp()
    p_xx = log_transition(points, points, temperature, metric, exclude_self=True).exp()
    p_xc = log_transition(points, centers, temperature, metric).exp()
    return torch.stack([p_cx @ torch.linalg.matrix_power(p_xx, t) @ p_xc for t in range(steps + 1)])


def clamp_log_scale(s_raw, clamp, mode):
    s_raw = s_raw.double()
    if mode == "atan":
        return clamp * 0.636 * torch.atan(s_raw)
    if mode == "atan_scaled":
        return clamp * 0.636 * torch.atan(s_raw / clamp)
    if mode == "tanh":
        return clamp * torch.tanh(s_raw / clamp)
    return s_raw


def coupling(x, s_raw, t, clamp, mode, reverse):
    s = clamp_log_scale(s_raw, clamp, mode)
    x, t = x.double(), t.double()
    if reverse:
        return (x - t) * torch.exp(-s), -s.sum(1)
    return x * torch.exp(s) + t, s.sum(1)


def ulp32(v):
    """The float32 spacing at |v| (float64 tensor in, float64 tensor out)."""
    a = v.abs().clamp_min(torch.finfo(torch.float32).tiny)
    return torch.pow(2.0, torch.floor(torch.log2(a)) - 23)


def freia_clamp_bound(clamp, mode):
    return clamp * (0.636 * math.pi / 2 if mode.startswith("atan") else 1.0)


def attention(features, queries, normalize, reduce):
    """Attention pooling with explicit per-image loops, ``F.normalize`` and ``log_softmax``:
    (pooled, attn) in float64."""
    f, q = features.double(), queries.double()
    pooled, attn = [], []
    for fb in f:  # [C, R]
        fh = F.normalize(fb, dim=0) if normalize else fb
        a = torch.log_softmax(q @ fh, dim=1).exp()  # [A, R]
        h = torch.stack([(a[i][None, :] * fh).sum(1) for i in range(q.shape[0])])  # [A, C]
        pooled.append(h.mean(0) if reduce == "mean" else h)
        attn.append(a)
    return torch.stack(pooled), torch.stack(attn)
