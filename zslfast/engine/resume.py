"""Checkpoints inside a run, and resuming an interrupted run with exactly the uninterrupted result.

How it works (one mechanism for every method, a callback of :func:`zslfast.engine.loop.train_epochs`):

- Every training stage (a ``train_epochs`` call that is not nested in an evaluation) gets a
  sequential number and is saved with its name; on ``--resume`` the stage at each position must
  have the recorded name, or the resume is refused (different code or settings). The run's *registry* (:meth:`RunContext.register`) names every object whose
  state carries from one epoch to the next outside the stage's modules: each random stream
  (``stream NAME``), the selector's best-so-far trackers (``best CHOICE``), method state such as
  SC-EGG's adaptive gradient-penalty weight (in its stage's modules, by key). States are saved and
  restored by name, never by position, and a checkpoint is of one zslfast version (its identity). A *snapshot* is the stage's modules and optimisers, its LR scheduler,
  every registry entry, the global RNG and the stage's history records.
- A snapshot is kept (on the CPU) at the end of every stage, and the checkpoint file
  ``<out>/resume.pt`` is written atomically at every stage boundary, every ``checkpoint_every``
  epochs, and when SIGINT / SIGTERM asked the run to stop: after the training step in progress,
  with the epoch's position (its trained batches, loss sums so far, and the generator state its
  batch order was drawn from, so the rest of the epoch's batches are the same).
- ``--resume`` runs the method's code again from the start. A stage that had finished is not trained
  again: its end snapshot is loaded into the objects the code has just rebuilt, so the code between
  stages (dense-feature passes, replay-buffer updates, evaluations outside the training loops)
  recomputes exactly what it computed before. The stage that was interrupted continues from its
  last snapshot. Random streams, initialisations and batch orders are functions of the seed and of
  this state only (:mod:`zslfast.engine.context`), so on the CPU the resumed run's metrics equal the
  uninterrupted run's exactly (tested for every method).

A stop request that arrives while no training step is running (an evaluation, SC-EGG's dense
pass, the final classifiers) takes effect at the next step; if none follows, the run completes.
"""
import os

import torch

from zslfast.engine.checkpoint import cpu_copy
from zslfast.distributed import any_rank, is_main, world
from zslfast.engine.loop import Callback, Resume
from zslfast.errors import ZSLError
from zslfast.io import load_checked, save_checkpoint

RESUME_FILE = "resume.pt"


class Interrupted(Exception):
    """A stop request (SIGINT / SIGTERM, or the test hook) was honoured: a checkpoint was written."""

    def __init__(self, path, stage, epoch, steps):
        super().__init__(f"interrupted in epoch {epoch} of stage {stage!r} after {steps} steps; checkpoint {path}")
        self.path, self.stage, self.epoch = path, stage, epoch


class State(dict):
    """A method's own values that change during a stage (tensors, numbers), as a dict that a
    checkpoint can save: pass it in the stage's ``modules`` (e.g. SC-EGG's adaptive GP weight)."""

    def state_dict(self):
        return dict(self)

    def load_state_dict(self, state):
        self.clear()
        self.update(state)


def _state(obj):
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    return obj.state_dict()


def _load(obj, state):
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


def rng_state():
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer(Callback):
    """The run's checkpoint bookkeeping (see the module docstring), a callback of the training loop
    (the run's last, so that it saves what the other callbacks recorded).

    Args:
        path: the checkpoint file (``<out>/resume.pt``).
        identity: what must match for a resume (method, dataset, seed, selection, config hash).
        config: the resolved configuration, saved with the checkpoint for the record.
        every: write a checkpoint every this many epochs of a stage (0: stage boundaries only).
        resume: a loaded checkpoint to continue from, or None.
        interrupt_after: test hook: request a stop after this many training steps of this process.
    """

    def __init__(self, path, identity, every=10, resume=None, interrupt_after=None, config=None):
        self.path, self.identity, self.every, self.config = path, identity, every, config
        self.completed = []          # end snapshots of the finished stages, in order
        self.resume = resume
        self.stop_requested = False
        self.interrupt_after = interrupt_after
        self._steps = 0
        self.recorder = None         # the run's CurveRecorder, saved with every checkpoint
        self.written = None          # the last checkpoint written, in words (for failure messages)
        if resume is not None:
            self.completed = list(resume["completed"])
            self.written = f"{path} (the checkpoint this run resumed from)"

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, run):
        """What a stage's checkpoint holds: its name, modules, scheduler, the registry's states by
        name, the global RNG and its history records (CPU copies)."""
        ctx, modules, scheduler, records = run.ctx, run.modules, run.scheduler, run.records
        return {"stage": run.stage, "modules": {k: cpu_copy(_state(m)) for k, m in modules.items()},
                "scheduler": cpu_copy(scheduler.state_dict()) if scheduler is not None else None,
                "registry": {k: cpu_copy(_state(o)) for k, o in ctx.registry.items()}, "rng": cpu_copy(rng_state()),
                "records": [dict(r) for r in records]}

    def restore(self, ctx, snap, modules, scheduler):
        missing = set(snap["registry"]) - set(ctx.registry)
        if set(snap["modules"]) != set(modules) or missing:
            what = sorted(missing) or sorted(set(snap["modules"]) ^ set(modules))
            raise ZSLError(f"--resume: the run does not replay as it was recorded ({', '.join(what)} differ: "
                           "different code or settings); start it again without --resume")
        for k, m in modules.items():
            _load(m, snap["modules"][k])
        if scheduler is not None and snap["scheduler"] is not None:
            scheduler.load_state_dict(snap["scheduler"])
        for name, state in snap["registry"].items():  # by name: a stream created in another order
            _load(ctx.registry[name], state)        # still gets its own state
        set_rng_state(snap["rng"])
        return [dict(r) for r in snap["records"]]

    # ------------------------------------------------------------------ the loop's callback
    def on_stage_start(self, run):
        """On ``--resume``: a stage that had finished is loaded (``Resume(done=True)``), the one that
        was interrupted is restored and continues; later stages run as in a fresh run."""
        if run.nested or self.resume is None:
            return None
        index, completed = run.index, self.resume["completed"]
        if index < len(completed):
            kind, snap = "done", completed[index]
        elif index == len(completed) and self.resume.get("current") is not None:
            kind, snap = "continue", self.resume["current"]
        else:
            return None
        if snap.get("stage") != run.stage:  # stages are matched by name too, not by position alone
            raise ZSLError(f"--resume: the run does not replay as it was recorded (stage {index + 1} is {run.stage!r} "
                           f"now, {snap.get('stage')!r} in the checkpoint: different code or settings); start it "
                           "again without --resume")
        records = self.restore(run.ctx, snap, run.modules, run.scheduler)
        if index >= len(completed):  # restored the interrupted stage: from here on, a fresh run
            self.resume = None
        return Resume(records, kind == "done", snap.get("partial"))

    def on_step_end(self, run, epoch, steps, sums):
        """A stop request (SIGINT / SIGTERM, or the test hook counting steps) is honoured after the
        step: a checkpoint with the epoch's position in it (its trained batches, loss sums and the
        sampler's epoch-start state), then :class:`Interrupted`. In a distributed run the ranks agree
        (a request on any rank stops all of them after the same step), at the cost of one
        one-integer all-reduce per step."""
        if run.nested:
            return
        self._steps += 1
        if self.interrupt_after is not None and self._steps >= self.interrupt_after:
            self.stop_requested = True
        if world()[1] > 1:
            self.stop_requested = any_rank(self.stop_requested)
        if not self.stop_requested:
            return
        current = self.snapshot(run)
        current["partial"] = {"epoch": epoch, "batches": steps, "sums": cpu_copy(sums),
                              "sampler": cpu_copy(getattr(run.batches, "epoch_start", None))}
        self.write(current, f"step {steps} of epoch {epoch} of stage {run.stage!r}")
        raise Interrupted(self.path, run.stage, epoch, steps)

    def on_epoch_end(self, event):
        """Write a checkpoint when due: at the stage's end (its snapshot kept), every ``every`` epochs."""
        run = event.run
        if run.nested:
            return
        last = event.epoch == event.epochs
        if last:
            self.completed.append(self.snapshot(run))
        if last or (self.every and event.epoch % self.every == 0):
            self.write(None if last else self.snapshot(run), f"epoch {event.epoch} of stage {run.stage!r}")

    def on_stage_end(self, run):
        """An empty stage (no epochs) still counts as a finished one."""
        if not run.nested and run.epochs == 0:
            self.completed.append(self.snapshot(run))

    def write(self, current, where):
        """Write the checkpoint file (rank 0 of a distributed run; every rank holds the same state);
        ``where``: after which step or epoch, in words."""
        if not is_main():
            return
        save_checkpoint(self.path, {"identity": self.identity, "config": self.config,
                                    "completed": self.completed, "current": current,
                                    "recorder": self.recorder.state_dict() if self.recorder else None})
        self.written = f"{self.path} (after {where})"

    def finish(self):
        """The run completed: its checkpoint is no longer needed."""
        if is_main() and os.path.exists(self.path):
            os.unlink(self.path)


def load_resume(run_dir, identity):
    """The checkpoint of an interrupted run in ``run_dir``, checked to be of the same run."""
    path = os.path.join(run_dir, RESUME_FILE)
    if not os.path.isfile(path):
        done = os.path.isfile(os.path.join(run_dir, "results.json"))
        raise ZSLError(f"--resume {run_dir}: no {RESUME_FILE} there" + (" (the run had finished)" if done else ""))
    ckpt = load_checked(path, "--resume")
    saved = ckpt.get("identity")
    if not isinstance(saved, dict) or "completed" not in ckpt:
        raise ZSLError(f"--resume {path}: not a zslfast resume checkpoint")
    diff = [k for k in identity if saved.get(k) != identity[k]]
    if diff:
        raise ZSLError(f"--resume {run_dir}: the checkpoint is of a different run ("
                       + ", ".join(f"{k} {saved.get(k)!r} there, {identity[k]!r} now" for k in diff) + ")")
    return ckpt
