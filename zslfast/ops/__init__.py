"""Public operators of zslfast.

Each operator has a pure-PyTorch reference (:mod:`zslfast.ops.reference`) and, when the package
was built with its extension, fused C++ (CPU) and CUDA kernels. ``ZSLFAST_BACKEND=auto|ext|torch``
(read at import) or :func:`set_backend` choose between them; :func:`backend` reports the choice.
"""
import torch

from zslfast import _ext
from zslfast.ops import _register  # noqa: F401  (fake kernels and autograd of the compiled ops)
from zslfast.ops.attention import attention_pool
from zslfast.ops.coupling import affine_coupling
from zslfast.ops.distance import nearest_prototype, pairwise_distance
from zslfast.ops.walk import random_walk_landing, transition_matrix

__all__ = ["pairwise_distance", "nearest_prototype", "transition_matrix", "random_walk_landing",
           "affine_coupling", "attention_pool", "backend", "set_backend", "extension_info"]


def backend(device="cpu"):
    """The implementation that runs float32/float64 ops on ``device``: ``"ext"`` or ``"torch"``."""
    device_type = torch.device(device).type
    if _ext.get_mode() == "torch":
        return "torch"
    if _ext.get_mode() == "ext" and not _ext.ext_available(device_type):
        raise RuntimeError(f"ZSLFAST_BACKEND=ext but the extension has no {device_type} kernels "
                           f"({_ext.LOAD_ERROR or 'built without them'})")
    return "ext" if _ext.ext_available(device_type) else "torch"


def set_backend(mode):
    """Choose the implementation at run time: ``"auto"``, ``"ext"`` or ``"torch"``."""
    _ext.set_mode(mode)


def extension_info():
    """What the compiled extension provides.

    Returns a dict with ``cpu`` and ``cuda`` (kernels built and usable), ``cuda_version`` (the CUDA
    version the extension was compiled with, or None), ``mode`` (the backend mode) and
    ``load_error`` (why ``zslfast._C`` could not be imported, or None).
    """
    return {"cpu": _ext.HAS_CPU, "cuda": _ext.HAS_CUDA, "cuda_version": _ext.CUDA_VERSION,
            "mode": _ext.get_mode(), "load_error": _ext.LOAD_ERROR}
