"""The run context: device, seed, selection protocol, progress, named random streams, callbacks.

Every random draw of a run comes from a *named stream* of its context, never from the global torch
RNG and never from a generator a method seeds itself:

    ctx.rng("batch_order")            # a CPU torch.Generator
    ctx.rng("noise", ctx.device)      # a generator on the training device: noise is drawn there
    with ctx.init_scope():            # network initialisation (nn.Linear's own init uses the
        model = Net(...)              # global RNG; the scope forks and restores it)

A stream's seed is a function of the run seed and the stream's name only, so adding a stream or
reordering calls never shifts another stream, and two runs with one seed draw the same numbers.
Each ``rng`` call starts its stream afresh: a stage that is run twice (a validation run, then the
refit on all of trainval) sees the same draws both times, as in zslfast 0.1. An evaluation inside a
training loop has a key (its stage and epoch, :meth:`RunContext.evaluation`), and
``ctx.rng(name, device, keyed=True)`` gives a stream of that key: every evaluation draws fresh
numbers, as the originals' continuing RNGs do, and a resumed or distributed run draws the same
ones, because the key depends on neither the process nor the history of calls.

The derivations of the streams that existed before the engine (:data:`LEGACY_STREAMS`) are kept as
they were, so the golden results of ``zslfast.golden`` did not move; new names are derived by
hashing (see :func:`stream_seed`).
"""
import contextlib
import hashlib
from dataclasses import dataclass, field

import torch

SELECTION_MODES = ("validation", "test", "fixed")

# name -> seed(run seed). These reproduce the generators the methods built themselves before the
# engine existed (CPU streams: seed·1000003 + offset; device streams: the run seed, or seed + 1).
LEGACY_STREAMS = {
    "init": lambda s: s,
    "batch_order": lambda s: s * 1000003 + 1,    # GSMFlow's flow batches and noise, GRW's batch order
    "synthesis": lambda s: s * 1000003 + 2,      # generative evaluation: synthetic features, classifiers
    "episodes": lambda s: s,                     # CVC's inductive episodes
    "transductive": lambda s: s + 1,             # CVC's transductive episodes
    "noise": lambda s: s,                        # GRW's generator noise and hallucinations
}


def stream_seed(seed, name):
    """The seed of stream ``name`` in a run with seed ``seed`` (a 63-bit integer)."""
    if name in LEGACY_STREAMS:
        return LEGACY_STREAMS[name](seed)
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class RunContext:
    """What a method gets besides its data and config.

    Attributes:
        device: the training device.
        seed: the run seed; every stream derives from it.
        quick: the run uses the small ``quick`` budget.
        selection: ``validation`` (the default: choose epochs / hyper-parameters on the class-disjoint
            validation split, refit on trainval), ``test`` (the original papers' protocol, asked for
            with ``--select-on-test``) or ``fixed`` (no selection).
        progress: show progress bars.
        callbacks: what attaches to the training loop (:class:`zslfast.engine.loop.Callback`):
            training curves, TensorBoard, checkpoints and ``--resume`` (the checkpointer last).
        save_features: keep what the plots need in ``artifacts`` (``--save-features``, ``--plots``):
            the generative evaluation's synthetic features and a subsample of the real ones, SC-EGG's
            attention maps of a few images. Nothing a run computes depends on it.
        artifacts: filled when ``save_features`` is set; written to ``<out>/features.pt``.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    quick: bool = False
    selection: str = "validation"
    progress: bool = True
    callbacks: list = field(default_factory=list)
    save_features: bool = False
    artifacts: dict = field(default_factory=dict)
    # resume bookkeeping (zslfast.engine.resume): objects whose state carries across epochs, by
    # name; the number of training stages started; evaluations in progress
    registry: dict = field(default_factory=dict)
    stages_started: int = 0
    evaluating: int = 0
    evaluation_keys: list = field(default_factory=list)

    def __post_init__(self):
        self.device = torch.device(self.device)
        if self.selection not in SELECTION_MODES:
            raise ValueError(f"selection must be one of {', '.join(SELECTION_MODES)}, got {self.selection!r}")

    def rng(self, name, device=None, keyed=False):
        """A fresh torch.Generator of stream ``name`` on ``device`` (default: the CPU).

        ``keyed``: inside an evaluation that has a key (see :meth:`evaluation`), the stream of
        ``name`` for that key, so each evaluation draws its own numbers; outside one, the plain
        stream ``name``."""
        if keyed and self.evaluation_keys and self.evaluation_keys[-1] is not None:
            name = f"{name}@{self.evaluation_keys[-1]}"
        gen = torch.Generator(device=torch.device(device) if device is not None else "cpu")
        gen.manual_seed(stream_seed(self.seed, name))
        return self.register(gen, f"stream {name}")

    def register(self, obj, name):
        """Add ``obj`` (a generator, or anything with ``state_dict`` / ``load_state_dict``) to the
        objects a checkpoint saves, under ``name`` (``name #2``, ``#3``... for later objects of the
        same name), so that a resumed run loads each state into the object of the same name, never
        by position; returns ``obj``. Ignored inside an evaluation, whose objects live only for that
        evaluation."""
        if not self.evaluating:
            key, n = name, 1
            while key in self.registry:
                n += 1
                key = f"{name} #{n}"
            self.registry[key] = obj
        return obj

    @contextlib.contextmanager
    def evaluation(self, key=None):
        """Marks an evaluation in progress (its training stages are nested, its streams not saved).
        ``key`` names this evaluation among the run's (the training loop passes its stage and
        epoch); keyed streams (:meth:`rng`) derive from the innermost one."""
        self.evaluating += 1
        self.evaluation_keys.append(key)
        try:
            yield
        finally:
            self.evaluation_keys.pop()
            self.evaluating -= 1

    @contextlib.contextmanager
    def init_scope(self, name="init"):
        """Network construction inside this block draws from stream ``name``; the global RNG state
        is saved before and restored after, so nothing outside the block sees a difference."""
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda):  # manual_seed seeds every device: restore them all
            torch.manual_seed(stream_seed(self.seed, name))
            yield
