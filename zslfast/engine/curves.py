"""Training curves: loop callbacks that see every training stage of every method in one place.

- :class:`CurveRecorder` (always on) keeps each stage's per-epoch records (steps, mean losses, the
  evaluation score) for ``results.json["history"]`` and the training-curve plots. A stage name seen
  again (a second fit with the same name) gets `` #2``, `` #3``, ... so no run overwrites another.
- :class:`TensorBoardLogger` (``--log tensorboard``) writes the same numbers as scalars
  ``<stage>/loss/<name>`` and ``<stage>/score`` at step = epoch, with ``torch.utils.tensorboard``.

Stages nested in an evaluation (the final classifiers trained to score a model) are not training
curves and are skipped by both. Neither hook changes anything a run computes: they only read the
records the loop already made.
"""
from zslfast.engine.loop import Callback
from zslfast.errors import ZSLError


class CurveRecorder(Callback):
    """Collects ``{stage: [record, ...]}`` from the training loop's epoch-end events."""

    def __init__(self):
        self.stages = {}
        self._current = {}

    def _key(self, event):
        if event.epoch == 1 or event.stage not in self._current:  # a stage starts: a fresh key
            key, n = event.stage, 1
            while key in self.stages:
                n += 1
                key = f"{event.stage} #{n}"
            self.stages[key] = []
            self._current[event.stage] = key
        return self._current[event.stage]

    def on_epoch_end(self, event):
        if not event.nested:
            self.stages[self._key(event)].append(dict(event.record))

    def to_dict(self):
        return {k: [dict(r) for r in v] for k, v in self.stages.items()}

    def state_dict(self):
        return {"stages": self.to_dict(), "current": dict(self._current)}

    def load_state_dict(self, state):
        self.stages, self._current = state["stages"], dict(state["current"])


def require_tensorboard():
    """torch.utils.tensorboard's SummaryWriter, or one clear error naming the missing package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ZSLError('--log tensorboard needs the tensorboard package: pip install "zslfast[tensorboard]"') from None
    return SummaryWriter


class TensorBoardLogger(CurveRecorder):
    """Writes every recorded epoch to TensorBoard event files in ``logdir`` (see the module docstring)."""

    def __init__(self, logdir):
        super().__init__()
        self.writer = require_tensorboard()(log_dir=logdir)

    def on_epoch_end(self, event):
        if event.nested:
            return
        key = self._key(event)
        self.stages[key].append(None)  # only the key bookkeeping is needed here
        for name, value in event.record.get("loss", {}).items():
            self.writer.add_scalar(f"{key}/loss/{name}", value, event.epoch)
        if "score" in event.record:
            self.writer.add_scalar(f"{key}/score", event.record["score"], event.epoch)

    def log_result(self, metrics, per_task=None):
        """The run's final test metrics (``final/<metric>``, step 0) and a continual run's per-task
        scores (``task/S``, ``task/U``, ``task/H`` at step = task), beside the curves."""
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"final/{name}", value, 0)
        for t in per_task or []:
            for key in ("S", "U", "H"):
                self.writer.add_scalar(f"task/{key}", t[key], t["task"])

    def close(self):
        self.writer.close()
