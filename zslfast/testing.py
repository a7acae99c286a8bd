"""Helpers for zslfast's tests, in the style of pytorch_scatter: the dtypes, devices and backends
that every operator test runs over. CUDA joins ``devices`` wherever a GPU is visible, so the same
test files run on CPU-only CI and on GPU machines."""
import itertools

import torch

from zslfast import _ext

grad_dtypes = [torch.float32, torch.float64]
dtypes = grad_dtypes

devices = [torch.device("cpu")]
if torch.cuda.is_available():
    devices.append(torch.device("cuda:0"))

backends = ["ext", "torch"]

# Relative error bounds for extension vs reference (max abs difference / max abs reference value).
REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def product(*lists):
    return list(itertools.product(*lists))


def ext_built_for(device):
    return _ext.ext_available(torch.device(device).type)


def rel_err(a, b):
    """max |a - b| / max |b| (0 when both are empty)."""
    a, b = a.detach(), b.detach()
    if b.numel() == 0:
        return 0.0
    scale = b.abs().max().clamp_min(torch.finfo(b.dtype).tiny)
    return float((a - b).abs().max() / scale)


def randn(*shape, dtype, device, generator=None, requires_grad=False):
    t = torch.randn(*shape, dtype=dtype, generator=generator).to(device)
    return t.requires_grad_(requires_grad)
