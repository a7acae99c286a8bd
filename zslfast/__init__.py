"""zslfast: zero-shot learning methods in PyTorch with fused C++/CUDA operators."""
__version__ = "0.1.0"

from zslfast import ops  # noqa: E402,F401


API = ("fit", "load", "load_dataset", "from_arrays", "read_classes", "Model", "Run")


def __getattr__(name):
    """The Python API (:mod:`zslfast.api`: ``fit``, ``load``, ``load_dataset``, ``from_arrays``,
    ``read_classes``, ``Model``, ``Run``), imported on first use so that ``import zslfast`` stays light."""
    if name in API:
        from zslfast import api

        return getattr(api, name)
    raise AttributeError(f"module 'zslfast' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(API))
