"""Loading of the compiled extension ``zslfast._C`` and the choice of operator backend.

The package works without the extension: every operator has a pure-PyTorch reference. Which one
runs is chosen per call from the backend mode (``ZSLFAST_BACKEND`` at import, or
:func:`zslfast.ops.set_backend`) and the device of the inputs:

* ``auto`` (default): the extension where it was built for that device, otherwise the reference;
* ``ext``: the extension, and a clear error where it is not available;
* ``torch``: always the reference.
"""
import os
import warnings

import torch

MODES = ("auto", "ext", "torch")

_C = None
LOAD_ERROR = None
try:
    from zslfast import _C  # noqa: F401  (importing runs the TORCH_LIBRARY registrations)
except ImportError as exc:  # no compiled extension: the references serve every op
    import glob

    built = glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_C*.so"))
    LOAD_ERROR = (f"{type(exc).__name__}: {exc}" if built else
                  "the package has no compiled zslfast._C (installed without a working C++ compiler?)")


def _has_kernel(key):
    if _C is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("zslfast::pairwise_distance", key)


HAS_CPU = _has_kernel("CPU")
HAS_CUDA = _has_kernel("CUDA")
CUDA_VERSION = None
if _C is not None:
    v = int(torch.ops.zslfast.cuda_version())
    if v > 0:
        CUDA_VERSION = f"{v // 1000}.{(v % 1000) // 10}"
    # An extension compiled for another CUDA major version than this torch's cannot run its CUDA
    # kernels (the classic "undefined symbol" / "no kernel image" failure): refuse them, loudly.
    if HAS_CUDA and torch.version.cuda and CUDA_VERSION.split(".")[0] != torch.version.cuda.split(".")[0]:
        warnings.warn(
            f"zslfast._C was compiled with CUDA {CUDA_VERSION} but torch uses CUDA {torch.version.cuda}; "
            "its CUDA kernels are disabled. Rebuild with `pip install --no-build-isolation .`.")
        HAS_CUDA = False


def _mode_from_env():
    mode = os.environ.get("ZSLFAST_BACKEND", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"ZSLFAST_BACKEND must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


_mode = _mode_from_env()


def set_mode(mode):
    global _mode
    if mode not in MODES:
        raise ValueError(f"backend must be one of {', '.join(MODES)}, got {mode!r}")
    _mode = mode


def get_mode():
    return _mode


def ext_available(device_type):
    return HAS_CPU if device_type == "cpu" else HAS_CUDA if device_type == "cuda" else False


_EXT_DTYPES = (torch.float32, torch.float64)


def use_ext(t):
    """Whether the extension runs an op whose (first) input is ``t``."""
    if _mode == "torch":
        return False
    ok = ext_available(t.device.type) and t.dtype in _EXT_DTYPES
    if _mode == "ext" and not ok:
        if _C is None:
            why = f"the compiled extension zslfast._C could not be loaded ({LOAD_ERROR})"
        elif t.dtype not in _EXT_DTYPES:
            why = f"the extension supports float32 and float64, not {t.dtype}"
        else:
            why = f"the extension was built without {t.device.type} kernels"
        raise RuntimeError(f"ZSLFAST_BACKEND=ext but {why}; rebuild with "
                           "`pip install --no-build-isolation .` or use ZSLFAST_BACKEND=auto")
    return ok
