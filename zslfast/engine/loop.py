"""The one training loop of every iterative method.

:func:`train_epochs` runs ``epochs`` epochs of a sampler's batches through a method's ``step``
function and owns everything around it, with one convention each:

- batching: the sampler's (its last-batch policy is declared by the method, see
  :mod:`zslfast.engine.samplers`);
- the learning-rate schedule steps once after every epoch (a schedule stepped at the start of every
  epoch but the first, as CVC's original does, gives the same learning rate in every epoch);
- evaluation after epoch e when e >= ``eval_start`` and (e % ``eval_every`` == 0 or e is the last),
  keyed by the stage and the epoch (:meth:`zslfast.engine.context.RunContext.evaluation`);
- a progress bar showing the epoch's mean losses;
- a per-epoch history record: the epoch, its step count, the mean of every loss the step returned
  (synchronised once per epoch, never per step) and the evaluation score where one was taken;
- divergence: a loss mean or score that is NaN/inf stops the run (:class:`zslfast.errors.Diverged`,
  naming the stage and epoch) before any callback sees the epoch, so the last checkpoint written is
  the last good one;
- callbacks (``ctx.callbacks``, :class:`Callback`): what attaches to the loop (training curves,
  TensorBoard, checkpoints and ``--resume``) sees the stage start (and may answer where it resumes),
  every step's end and every epoch's end.
"""
import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from tqdm.auto import tqdm

from zslfast.errors import Diverged


@dataclass
class StageRun:
    """A stage as the loop runs it, as callbacks see it: its name, its sequence number among the
    run's training stages (None for a stage nested in an evaluation: a final classifier trained to
    score a model, not part of the run's training or its checkpoints), its epochs, the modules /
    optimisers / state the method registered for it, its scheduler and sampler, its history records
    and the run context."""

    stage: str
    index: Optional[int]
    epochs: int
    modules: dict
    scheduler: object
    batches: object
    records: list
    ctx: object

    @property
    def nested(self):
        return self.index is None


@dataclass
class Resume:
    """A callback's answer to :meth:`Callback.on_stage_start` (``--resume``): the stage's restored
    history records; ``done``: it had finished (it is not trained again); ``partial``: it stopped
    inside the next epoch (that epoch's trained batches, loss sums and sampler state)."""

    records: list
    done: bool
    partial: Optional[dict] = None


@dataclass
class EpochEvent:
    """What an epoch-end callback sees: the stage name, the epoch (1-based) of ``epochs``, the
    epoch's history record, the modules / optimisers the method registered for the stage, whether the
    stage is ``nested`` in an evaluation (see :class:`StageRun`), and the :class:`StageRun`."""

    stage: str
    epoch: int
    epochs: int
    record: dict
    modules: dict = field(default_factory=dict)
    nested: bool = False
    run: Optional[StageRun] = None


class Callback:
    """Something that attaches to the training loop; every method is optional (a no-op here)."""

    def on_stage_start(self, run):
        """Before the stage's first epoch; a :class:`Resume` continues the stage from a checkpoint."""
        return None

    def on_step_end(self, run, epoch, steps, sums):
        """After each training step: ``steps`` steps of ``epoch`` done, ``sums`` their loss sums."""

    def on_epoch_end(self, event):
        """After each epoch (its evaluation included): an :class:`EpochEvent`."""

    def on_stage_end(self, run):
        """After the stage's last epoch."""


class History:
    """Per-epoch records of one stage."""

    def __init__(self, stage):
        self.stage = stage
        self.records = []

    def scores(self):
        """[(epoch, score)] of the evaluated epochs."""
        return [(r["epoch"], r["score"]) for r in self.records if "score" in r]

    def to_list(self):
        return [dict(r) for r in self.records]


def _as_losses(out):
    if out is None:
        return {}
    if isinstance(out, dict):
        return out
    return {"loss": out}


def train_epochs(stage, epochs, batches, step, ctx, *, scheduler=None, evaluate=None, eval_every=1, eval_start=1,
                 on_epoch_start=None, modules=None, desc=None, leave=False, nested=False):
    """Train ``epochs`` epochs; returns the stage's :class:`History`.

    Args:
        stage: the stage's name (history, callbacks, progress bar).
        batches: a sampler (``epoch()`` yields the epoch's batches).
        step: ``step(batch) -> loss tensor | {name: loss tensor} | None``, one optimiser step; losses
            detached.
        scheduler: an LR scheduler stepped after every epoch.
        evaluate: ``evaluate(epoch) -> float`` at the evaluation epochs (see the module docstring).
        on_epoch_start: ``f(epoch)`` before the epoch's first batch (e.g. a pseudo-label refresh).
        modules: what callbacks may save ({name: module, optimiser or state}).
        nested: the stage is part of an evaluation (see :class:`EpochEvent`).
    """
    history = History(stage)
    nested = nested or ctx.evaluating > 0
    index = None
    if not nested:
        index = ctx.stages_started
        ctx.stages_started += 1
    run = StageRun(stage, index, epochs, modules or {}, scheduler, batches, history.records, ctx)
    callbacks = ctx.callbacks
    first, partial = 1, None
    for callback in callbacks:
        resume = callback.on_stage_start(run)
        if resume is None:
            continue
        history.records[:] = resume.records  # --resume: a finished stage is loaded, the interrupted one continues
        if resume.done:
            return history
        first = len(history.records) + 1
        partial = resume.partial  # stopped inside epoch ``first``: its trained batches and loss sums
        if hasattr(batches, "skip_epochs"):
            batches.skip_epochs(first - 1)
    bar = tqdm(range(first, epochs + 1), desc=desc or stage, disable=not ctx.progress, leave=leave,
               initial=first - 1, total=epochs)
    for epoch in bar:
        if partial is not None:  # resume inside the epoch (its start hook already ran: its state is restored)
            sums = {k: v.to(ctx.device) if isinstance(v, torch.Tensor) else v for k, v in partial["sums"].items()}
            steps = partial["batches"]
            epoch_batches = batches.epoch(skip=partial["batches"], start_state=partial["sampler"])
            partial = None
        else:
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            sums, steps = {}, 0
            epoch_batches = batches.epoch()
        stepped = False
        for batch in epoch_batches:
            stepped = True
            for key, value in _as_losses(step(batch)).items():
                sums[key] = sums[key] + value if key in sums else value
            steps += 1
            for callback in callbacks:
                callback.on_step_end(run, epoch, steps, sums)
        if scheduler is not None:
            with warnings.catch_warnings():
                if not stepped:  # --resume after the epoch's last step: its optimiser steps were taken
                    # before the interruption, so PyTorch's "scheduler before optimizer" warning is wrong
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
                scheduler.step()
        record = {"epoch": epoch, "steps": steps}
        if sums:
            record["loss"] = {k: float(v) / steps for k, v in sums.items()}
            bar.set_postfix({k: f"{v:.4f}" for k, v in list(record["loss"].items())[:3]})
        if evaluate is not None and epoch >= eval_start and (epoch % eval_every == 0 or epoch == epochs):
            with ctx.evaluation(f"{stage}/epoch {epoch}"):  # keyed: fresh draws per evaluation
                record["score"] = float(evaluate(epoch))
        bad = [k for k, v in record.get("loss", {}).items() if not math.isfinite(v)]
        if not math.isfinite(record.get("score", 0.0)):
            bad.append("the evaluation score")
        if bad:  # before the callbacks: no checkpoint of a diverged state is written
            raise Diverged(stage, epoch, " and ".join(f"{k!r}" if k in record.get("loss", {}) else k for k in bad))
        history.records.append(record)
        event = EpochEvent(stage, epoch, epochs, record, run.modules, nested, run)
        for callback in callbacks:
            callback.on_epoch_end(event)
    for callback in callbacks:
        callback.on_stage_end(run)
    return history


class _Chunk:
    """The next ``chunk`` batches (fewer for the last) of an iteration budget, as one "epoch"."""

    def __init__(self, sampler, iterations, chunk):
        self.sampler, self.left, self.chunk = sampler, iterations, chunk

    def skip_epochs(self, n):
        """--resume: the first ``n`` chunks were trained before the interruption."""
        self.left -= n * self.chunk

    def epoch(self, skip=0, start_state=None):
        n = min(self.chunk, self.left)
        self.left -= n
        for _ in range(n - skip):
            yield self.sampler.sample()


def train_iterations(stage, iterations, sampler, step, ctx, *, chunk=100, modules=None, desc=None):
    """Train for a budget of ``iterations`` steps rather than epochs (SC-EGG's stages 1 and 2 count
    iterations of freshly drawn class-balanced batches, with no notion of an epoch).

    ``sampler.sample()`` draws one batch. The budget runs through :func:`train_epochs` as
    ⌈iterations / chunk⌉ "epochs" of ``chunk`` steps (the last one shorter), so progress, the
    per-chunk loss history and the callbacks work as for any stage. Returns the History.
    """
    chunks = _Chunk(sampler, iterations, chunk)
    return train_epochs(stage, -(-iterations // chunk), chunks, step, ctx, modules=modules, desc=desc)


def eval_mode(module, evaluate, *args):
    """The ``evaluate(epoch)`` of :func:`train_epochs` for a stage whose evaluation needs ``module``
    in eval mode: calls ``evaluate(*args, epoch)`` in eval mode and puts the module back in train
    mode. None when ``evaluate`` is None (no evaluation)."""
    if evaluate is None:
        return None

    def scorer(epoch):
        module.eval()
        try:
            return evaluate(*args, epoch)
        finally:
            module.train()

    return scorer


def detached(loss):
    """A loss for the loop's history: detached, not synchronised."""
    return loss.detach() if isinstance(loss, torch.Tensor) else loss
