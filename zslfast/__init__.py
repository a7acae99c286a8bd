"""zslfast: zero-shot learning methods in PyTorch with fused C++/CUDA operators."""
__version__ = "0.1.0"

from zslfast import ops  # noqa: E402,F401


def __getattr__(name):
    """``zslfast.load`` and ``zslfast.Model`` (:mod:`zslfast.api`), imported on first use so that
    ``import zslfast`` stays light."""
    if name in ("load", "Model"):
        from zslfast import api

        return getattr(api, name)
    raise AttributeError(f"module 'zslfast' has no attribute {name!r}")
