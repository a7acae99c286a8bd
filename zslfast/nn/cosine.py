"""Scaled-cosine scoring: s·(cos(x, w_c) + β), the classifier of GRW (fixed s, no β) and CVC
(learnable s and β), computed as one GEMM through ``ops.pairwise_distance``."""
import torch
from torch import nn

from zslfast import ops


def scaled_cosine(x, weights, scale, bias=None):
    """scale · (cos(x_i, w_c) + bias), [N, C] (bias omitted when None)."""
    cos = 1 - ops.pairwise_distance(x, weights, "cosine")
    if bias is not None:
        cos = cos + bias
    return scale * cos


class CosineScorer(nn.Module):
    """:func:`scaled_cosine` with a learnable scale s (initialised to ``scale``) and bias β (0)."""

    def __init__(self, scale=10.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, x, weights):
        return scaled_cosine(x, weights, self.scale, self.bias)
