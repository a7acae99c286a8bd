"""The method registry and the run context that the training CLI hands to a method.

A method is a class with ``name``, ``setting``, ``selection`` (how it chooses its model, for the
log line), ``settings`` (its declared configuration keys, a :class:`zslfast.settings.Section`) and
``run(data, config, ctx) -> MethodResult``;
registering it with :func:`register` makes it available as ``python -m zslfast.train --method NAME``
with its configuration in ``zslfast/configs/NAME.yaml``.
"""
from dataclasses import dataclass, field

import torch

from zslfast.errors import ZSLError

METHODS = {}


def register(cls):
    """Class decorator adding a method to the registry under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


def get_method(name):
    import zslfast.models  # noqa: F401  (importing registers every method)

    if name not in METHODS:
        raise ZSLError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]()


@dataclass
class RunContext:
    """What a method needs besides data and config."""

    device: torch.device
    seed: int = 0
    quick: bool = False
    select_on_test: bool = False  # reproduce the original papers' test-set model selection
    progress: bool = True

    def generator(self, offset=0):
        """A CPU torch.Generator seeded from the run seed (plus ``offset`` for independent streams)."""
        return torch.Generator().manual_seed(self.seed * 1000003 + offset)


@dataclass
class MethodResult:
    """What a method returns: headline metrics, optional per-task metrics (continual methods),
    how the model was selected, the state to checkpoint, and method-specific facts about the run
    (``info``, e.g. a generative method's synthetic budget) for results.json."""

    metrics: dict
    state: dict
    selection: dict = field(default_factory=dict)
    per_task: list = None
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
