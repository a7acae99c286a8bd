"""zslfast: zero-shot learning methods in PyTorch with fused C++/CUDA operators."""
__version__ = "0.1.0"

from zslfast import ops  # noqa: E402,F401
