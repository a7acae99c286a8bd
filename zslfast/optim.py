"""Optimiser construction shared by the methods."""
import torch


def adam(params, device, lr, weight_decay=0.0, **kwargs):
    """torch.optim.Adam, fused where PyTorch has a fused kernel for ``device`` (CPU and CUDA).

    Same algorithm as the default; the default's per-parameter temporaries took up to half of a
    small model's step on the CPU (see benchmarks/README.md).
    """
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused, **kwargs)
