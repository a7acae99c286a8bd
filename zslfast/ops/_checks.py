"""Input validation shared by the public operators: one clear error per problem, before any work."""
import torch

DISTANCE_METRICS = ("sqeuclidean", "euclidean", "cosine", "dot")
SIMILARITY_METRICS = ("cosine", "sqeuclidean")
CLAMP_MODES = ("atan", "atan_scaled", "tanh", "none")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_matrix(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")


def check_pair(x, y, xname="x", yname="y"):
    check_matrix(xname, x)
    check_matrix(yname, y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{xname} and {yname} must have the same feature size, "
                         f"got {x.shape[1]} and {y.shape[1]}")
    if x.dtype != y.dtype:
        raise TypeError(f"{xname} and {yname} must have the same dtype, got {x.dtype} and {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"{xname} and {yname} must be on the same device, got {x.device} and {y.device}")


def check_positive(name, value):
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
