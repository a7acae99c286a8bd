"""The continual-learning protocol (GRW-CZSL): classes arrive in tasks; each task trains on its own
samples plus the replay buffer for a fixed number of epochs through the engine's loop, then every
class is scored on the task's test images (S over the classes seen so far, U over the rest) and
the buffer is updated. mSA / mUA / mH are the means over tasks (:func:`zslfast.eval.continual_summary`).
"""
import time

import torch
from tqdm.auto import tqdm

from zslfast.engine.loop import train_epochs
from zslfast.engine.samplers import ShuffledBatches
from zslfast.eval.metrics import continual_summary, continual_task_metrics


def run_continual(data, split, buffer, ctx, *, epochs, batch_size, start_task, step, predictor, min_batch=1,
                  modules=None, name="task"):
    """Train and evaluate task after task.

    Args:
        data: the dataset on the training device; ``split`` its :class:`zslfast.data.ContinualSplit`;
            ``buffer`` a :class:`zslfast.data.ReplayBuffer`.
        start_task: ``start_task(task)`` before a task's first epoch (fresh optimisers, class means, ...).
        modules: the task's {name: module or optimiser} for checkpoints, or a function returning
            them (called after ``start_task``, which may create new optimisers).
        step: ``step(features, labels) -> losses`` on one batch.
        predictor: ``predictor() -> predict_fn`` after a task: ``predict_fn(features) -> class ids``.
        min_batch: batches smaller than this are skipped (the method's original rule).

    The batch order of every task comes from one ``batch_order`` stream (CPU), so runs match across
    devices. Returns (summary metrics, per-task records); the per-epoch curves reach the run's
    hooks (:mod:`zslfast.engine.curves`).
    """
    order = ctx.rng("batch_order")
    per_task = []
    last = split.trained_tasks[-1] if split.trained_tasks else 0
    for ti in tqdm(split.trained_tasks, desc=f"{name}s", disable=not ctx.progress):
        t_task = time.perf_counter()
        task = split.task(ti)
        train_idx = torch.cat([task.train, buffer.indices])
        start_task(task)
        batches = ShuffledBatches(None, batch_size, order, ctx.device, last_batch="keep", min_size=min_batch,
                                  indices=train_idx)
        stage = f"{name}{ti}"
        train_epochs(stage, epochs, batches, lambda idx: step(data.features[idx], data.labels[idx]), ctx,
                     modules=modules() if callable(modules) else modules, desc=f"{name} {ti}/{last}")
        buffer.update(task, split.labels)
        metrics = continual_task_metrics(predictor(), data.features, data.labels, task.test_seen, task.test_unseen)
        per_task.append({"task": ti, "seen_classes": task.seen_classes.numel(), **metrics,
                         "train_samples": int(train_idx.numel()), "seconds": time.perf_counter() - t_task})
        if ctx.progress:
            tqdm.write(f"[{name}] {ti}: S {metrics['S']:.2f} U {metrics['U']:.2f} H {metrics['H']:.2f}")
    return continual_summary(per_task), per_task
