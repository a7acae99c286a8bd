"""Model state for checkpoints: CPU copies of a module's weights, and reading a zslfast
checkpoint.pt back with one clear error for every way it can be wrong."""
import torch

from zslfast.errors import ZSLError
from zslfast.io import load_checked


def cpu_state(module):
    """A CPU copy of ``module``'s state dict (a copy: on the CPU ``.cpu()`` would alias the live weights)."""
    return cpu_copy(module.state_dict())


def cpu_copy(value):
    """A CPU deep copy of a state (nested dicts / lists / tuples of tensors and plain values, every
    tensor cloned): safe against later in-place training, and free of device memory."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


def load_checkpoint(path, setting, method=None, part=None):
    """The checkpoint dict at ``path`` (a training run's checkpoint.pt), checked to come from
    ``method`` and to hold ``state[part]``; ``setting`` names the config key in errors."""
    ckpt = load_checked(path, setting)  # a missing, truncated, foreign or corrupted file: one clear error
    if ((method is not None and ckpt.get("method") != method)
            or (part is not None and part not in (ckpt.get("state") or {}))):
        raise ZSLError(f"{setting} {path}: not a checkpoint of --method {method}")
    return ckpt
