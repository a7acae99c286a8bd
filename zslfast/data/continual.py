"""Class-incremental (continual) ZSL tasks and the replay buffer, as in GRW-CZSL's protocol
(reference note grw_czsl.md §1.1–1.2).

Classes are taken in their dataset order and cut into consecutive blocks of ``classes_per_task``.
The xlsa17 splits are not used: all images go through one random, non-stratified 80/20 split
(scikit-learn's ``train_test_split`` with ``random_state=42``, as the original code). At task t
(1-based) the seen classes are ids 0..K−1 with K = S·t and the unseen classes all the rest; the
training data are the new classes' train images plus the replay buffer.
"""
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from zslfast.errors import ZSLError

# (classes per task, number of tasks) of the original code; the last task is never trained.
CONTINUAL_SETTINGS = {"AWA1": (10, 5), "AWA2": (10, 5), "CUB": (10, 20), "SUN": (47, 15)}


@dataclass
class Task:
    """One continual task (``index`` is 1-based). All index tensors point into the dataset."""

    index: int
    new_classes: torch.Tensor
    seen_classes: torch.Tensor
    unseen_classes: torch.Tensor
    train: torch.Tensor  # train images of the new classes
    test_seen: torch.Tensor  # test images of classes 0..K-1
    test_unseen: torch.Tensor  # test images of classes K..C-1


class ContinualSplit:
    """The tasks of a continual run over ``labels`` (int64 [N], classes 0..C−1).

    Args:
        labels: class of every sample.
        num_classes: C.
        classes_per_task: S.
        num_tasks: T; tasks 1..T−1 are the ones trained and evaluated (the last has no unseen classes).
        test_size, seed: the per-image split (0.2 and 42 in the original code).
    """

    def __init__(self, labels, num_classes, classes_per_task, num_tasks, test_size=0.2, seed=42):
        if classes_per_task < 1 or num_tasks < 2:
            raise ZSLError(f"continual split needs classes_per_task >= 1 and num_tasks >= 2, got "
                           f"{classes_per_task} and {num_tasks}")
        if classes_per_task * (num_tasks - 1) >= num_classes:
            raise ZSLError(f"{num_tasks - 1} trained tasks of {classes_per_task} classes leave no unseen class "
                           f"among {num_classes}")
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.num_classes, self.classes_per_task, self.num_tasks = num_classes, classes_per_task, num_tasks
        # Splitting the index vector consumes the random state exactly as splitting the features does.
        train, test = train_test_split(np.arange(self.labels.numel()), test_size=test_size, random_state=seed)
        self.train_idx = torch.from_numpy(np.asarray(train, dtype=np.int64))
        self.test_idx = torch.from_numpy(np.asarray(test, dtype=np.int64))

    @property
    def trained_tasks(self):
        return range(1, self.num_tasks)

    def task(self, t):
        if t not in self.trained_tasks:
            raise ZSLError(f"task must be in 1..{self.num_tasks - 1}, got {t}")
        s = self.classes_per_task
        k = s * t
        new = torch.arange(s * (t - 1), k)
        y_train, y_test = self.labels[self.train_idx], self.labels[self.test_idx]
        return Task(index=t, new_classes=new, seen_classes=torch.arange(k),
                    unseen_classes=torch.arange(k, self.num_classes),
                    train=self.train_idx[(y_train >= s * (t - 1)) & (y_train < k)],
                    test_seen=self.test_idx[y_test < k], test_unseen=self.test_idx[y_test >= k])


class ReplayBuffer:
    """Real samples of past classes, replayed with later tasks (by index into the dataset).

    After task t the per-class quota is q = floor(size / K), K = S·t: each old class keeps the first
    q of its buffered samples, each new class its first q train samples in split order (no herding,
    no re-selection, as the original code).
    """

    def __init__(self, size=5000):
        if size < 0:
            raise ZSLError(f"replay buffer size must be >= 0, got {size}")
        self.size = size
        self.indices = torch.empty(0, dtype=torch.long)

    def update(self, task, labels):
        """Refill after finishing ``task`` (a :class:`Task`); ``labels`` are the dataset's labels."""
        quota = self.size // task.seen_classes.numel()
        labels = torch.as_tensor(labels)
        candidates = torch.cat([self.indices, task.train])  # old buffer first, then the new classes
        cls = labels[candidates]
        # rank of each candidate within its class, in order of appearance
        order = torch.argsort(cls, stable=True)
        sorted_cls = cls[order]
        _, counts = torch.unique_consecutive(sorted_cls, return_counts=True)
        starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel()) - starts
        self.indices = candidates[rank < quota]
        return self.indices
