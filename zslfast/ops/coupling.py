"""The element-wise core of an affine coupling block (GLOW / RealNVP style normalising flows)."""
import torch

from zslfast import _ext
from zslfast.ops import reference
from zslfast.ops._checks import CLAMP_MODES, check_choice, check_matrix, check_positive


def affine_coupling(x, s_raw, t, clamp=1.0, clamp_mode="atan", reverse=False):
    """Apply an affine transform with soft-clamped log-scales; returns ``(y [B,L], logdet [B])``.

    s = clampfn(s_raw); forward: y = x·exp(s) + t, logdet = Σ_j s; reverse: y = (x − t)·exp(−s),
    logdet = −Σ_j s, so reverse undoes forward and the log-dets cancel.

    clamp modes: ``"atan"`` s = clamp·0.636·atan(s_raw) (current FrEIA), ``"atan_scaled"``
    s = clamp·0.636·atan(s_raw/clamp) (FrEIA before 2021, its GLOW block), ``"tanh"``
    s = clamp·tanh(s_raw/clamp), ``"none"`` s = s_raw. 0.636 is FrEIA's constant, kept for parity.

    One fused pass over memory forward and one backward (gradients for x, s_raw and t).
    """
    check_choice("clamp_mode", clamp_mode, CLAMP_MODES)
    check_matrix("x", x)
    for name, other in (("s_raw", s_raw), ("t", t)):
        check_matrix(name, other)
        if other.shape != x.shape or other.dtype != x.dtype or other.device != x.device:
            raise ValueError(f"{name} must match x in shape, dtype and device: got {tuple(other.shape)} "
                             f"{other.dtype} {other.device} vs {tuple(x.shape)} {x.dtype} {x.device}")
    if clamp_mode != "none":
        check_positive("clamp", clamp)
    if _ext.use_ext(x):
        # The backward reuses exp(±s) from the forward; only worth writing when a backward will run.
        save = torch.is_grad_enabled() and (x.requires_grad or s_raw.requires_grad or t.requires_grad)
        y, logdet, _ = torch.ops.zslfast.affine_coupling(x, s_raw, t, float(clamp), clamp_mode, bool(reverse), save)
        return y, logdet
    return reference.affine_coupling(x, s_raw, t, clamp, clamp_mode, reverse)
