"""The continual family (GRW-CZSL, and any continual method added later): classes arrive in tasks;
each task trains on its own samples plus the replay buffer for a fixed number of epochs, then every
class is scored on the task's test images (S over the classes seen so far, U over the rest) and the
buffer is updated. mSA / mUA / mH are the means over tasks (:func:`zslfast.eval.continual_summary`).

A continual method declares ``learner(data, config, ctx)``: the object that learns across tasks,
with three methods:

- ``task_stage(name, task, batches, epochs)``: prepare the task (its class means, fresh optimisers,
  ...) and return its training :class:`~zslfast.engine.recipe.Stage` (``batches`` yields index
  tensors into the data);
- ``predictor()``: after a task, ``predict(features) -> class ids`` over all classes;
- ``export(split)``: ``(state, model)``: the checkpointed tensors and the exported model record.

:meth:`ContinualMethod.run` owns the task split (the config's ``classes_per_task`` / ``num_tasks``,
else the original's for the dataset), the replay buffer, the batch order (one ``batch_order``
stream on the CPU, so runs match across devices), the per-task evaluation and the summary. There is
no model selection: every task trains the configured epochs (selection mode ``fixed``).
"""
import time
from abc import abstractmethod

import torch
from tqdm.auto import tqdm

from zslfast.data.continual import CONTINUAL_SETTINGS, ContinualSplit, ReplayBuffer
from zslfast.engine.method import Method, MethodResult
from zslfast.engine.recipe import run_recipe
from zslfast.engine.samplers import ShuffledBatches
from zslfast.engine.selection import Selector
from zslfast.eval.metrics import continual_summary, continual_task_metrics


def task_setting(data, config):
    """(classes per task, number of tasks): the config's, else the original's for the dataset name,
    else five tasks."""
    s, t = config["classes_per_task"], config["num_tasks"]
    if s is None or t is None:
        ds, dt = CONTINUAL_SETTINGS.get(data.name, (max(1, data.num_classes // 5), 5))
        s, t = s or ds, t or dt
    return int(s), int(t)


class ContinualMethod(Method):
    """A continual GZSL method (see the module docstring). Its settings extend the ``continual``,
    ``epochs`` and ``batches`` blocks."""

    setting = "continual gzsl"
    selection_modes = ("fixed",)  # a fixed number of epochs per task, as the original
    min_batch = 1                 # batches smaller than this are skipped (the method's original rule)

    @abstractmethod
    def learner(self, data, config, ctx):
        """The object that learns across tasks (``task_stage``, ``predictor``, ``export``)."""

    def run(self, data, config, ctx):
        t0 = time.perf_counter()
        s, t = task_setting(data, config)
        split = ContinualSplit(data.labels, data.num_classes, s, t, **config["split"])
        data = data.to(ctx.device)
        learner = self.learner(data, config, ctx)
        per_task = []
        run_recipe(self._tasks(learner, data, split, config, ctx, per_task), ctx)
        selector = Selector(data, ctx)
        selector.record("epochs_per_task", config["epochs"])
        state, model = learner.export(split)
        return MethodResult(metrics=continual_summary(per_task), state=state, per_task=per_task,
                            selection=selector.to_dict(), model=model, timings={"train_s": time.perf_counter() - t0})

    def _tasks(self, learner, data, split, config, ctx, per_task):
        """The run as a recipe: one stage per trained task, each followed by the buffer update and
        the task's evaluation (appended to ``per_task``)."""
        order = ctx.rng("batch_order")
        buffer = ReplayBuffer(config["buffer_size"])
        for ti in tqdm(split.trained_tasks, desc="tasks", disable=not ctx.progress):
            t_task = time.perf_counter()
            task = split.task(ti)
            train_idx = torch.cat([task.train, buffer.indices])
            batches = ShuffledBatches(None, config["batch_size"], order, ctx.device, last_batch="keep",
                                      min_size=self.min_batch, indices=train_idx)
            yield learner.task_stage(f"task{ti}", task, batches, config["epochs"])
            buffer.update(task, split.labels)
            metrics = continual_task_metrics(learner.predictor(), data.features, data.labels, task.test_seen,
                                             task.test_unseen)
            per_task.append({"task": ti, "seen_classes": task.seen_classes.numel(), **metrics,
                             "train_samples": int(train_idx.numel()), "seconds": time.perf_counter() - t_task})
            if ctx.progress:
                tqdm.write(f"[task] {ti}: S {metrics['S']:.2f} U {metrics['U']:.2f} H {metrics['H']:.2f}")
