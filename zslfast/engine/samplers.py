"""Batch samplers of the training loop. A sampler's ``epoch()`` yields one epoch's batches, drawn
lazily (a batch's random draws happen when the loop asks for it, so draws made by the step in
between keep their order).

- :class:`ShuffledBatches`: a fresh permutation every epoch, with an explicit last-batch policy
  (each method declares the one its original used).
- :class:`EpisodeBatches`: ``steps`` episodes (classes × samples) per epoch from an
  :class:`EpisodeSampler` (CVC).
- :class:`RandomBatches`: independent uniform draws of B distinct rows (TF-VAEGAN, f-CLSWGAN).
- Continual tasks: :class:`zslfast.engine.continual.ContinualMethod` builds a
  :class:`ShuffledBatches` per task over the task's samples plus the replay buffer.
"""
import torch

from zslfast.errors import ZSLError

LAST_BATCH = ("keep", "drop")


class ShuffledBatches:
    """Shuffled mini-batches of ``n`` items (or of the given ``indices``), as index tensors on ``device``.

    Args:
        n: number of items (positions 0..n−1), unless ``indices`` is given.
        batch_size: items per batch. With ``last_batch="drop"`` a batch size above ``n`` is clipped to
            ``n`` (one batch of everything), as GSMFlow's original does.
        generator: the stream the permutation is drawn from (on its own device).
        device: where the yielded indices live.
        last_batch: ``keep`` (the partial last batch is trained) or ``drop``.
        min_size: batches smaller than this are skipped (GRW's original skips batches of one).
        indices: a CPU index tensor to permute instead of 0..n−1.
    """

    def __init__(self, n, batch_size, generator, device, last_batch="keep", min_size=1, indices=None):
        if last_batch not in LAST_BATCH:
            raise ValueError(f"last_batch must be one of {LAST_BATCH}, got {last_batch!r}")
        self.n = int(indices.numel()) if indices is not None else int(n)
        self.batch_size = min(batch_size, self.n) if last_batch == "drop" else batch_size
        self.generator, self.device, self.last_batch = generator, torch.device(device), last_batch
        self.min_size, self.indices = min_size, indices

    def __len__(self):
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if self.last_batch == "keep" and rest >= max(1, self.min_size) else 0)

    def epoch(self, skip=0, start_state=None):
        """The epoch's batches. ``skip``, ``start_state`` (--resume inside an epoch): the generator
        state the epoch's permutation was drawn from, and how many batches were already trained;
        the permutation is drawn again from it and the generator is put back as it was."""
        g = self.generator
        if start_state is not None:
            now = g.get_state()
            g.set_state(start_state)
        self.epoch_start = g.get_state()  # saved by mid-epoch checkpoints
        perm = torch.randperm(self.n, generator=g, device=g.device)
        if start_state is not None:
            g.set_state(now)
        if self.indices is not None:
            perm = self.indices.to(perm.device)[perm]
        perm = perm.to(self.device)
        b = self.batch_size
        stop = self.n - b + 1 if self.last_batch == "drop" else self.n
        yielded = 0
        for i in range(0, max(stop, 0), b):
            idx = perm[i:i + b]
            if idx.numel() >= self.min_size:
                yielded += 1
                if yielded > skip:
                    yield idx


class EpisodeSampler:
    """Episodes of distinct classes × distinct samples, drawn on the device of ``labels``.

    Args:
        labels: class id of every candidate sample (any ids).
        generator: a torch.Generator on the same device.

    Samples are kept in a padded [classes, max count] table; a draw gives random keys to the classes
    (and to each class's samples, padding excluded) and keeps the top-k, so classes and samples are
    distinct within an episode and no Python loop runs over samples.
    """

    def __init__(self, labels, generator):
        self.generator = generator
        self.classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(labels.numel(), device=labels.device) - starts[inverse[order]]
        self.table = torch.full((self.classes.numel(), int(counts.max())), -1, dtype=torch.long, device=labels.device)
        self.table[inverse[order], rank] = order
        self.counts = counts

    def sample(self, ways, shots, episodes=1):
        """Positions [E, ways, shots] into ``labels`` and their class ids [E, ways]."""
        n_cls = self.classes.numel()
        if ways > n_cls:
            raise ZSLError(f"episodes of {ways} ways need {ways} classes, only {n_cls} are available")
        if shots > int(self.counts.min()):
            raise ZSLError(f"episodes of {shots} shots need {shots} samples per class; the smallest class has "
                           f"{int(self.counts.min())}")
        dev = self.table.device
        pick = torch.rand(episodes, n_cls, generator=self.generator, device=dev).topk(ways, dim=1).indices
        keys = torch.rand(episodes, ways, self.table.shape[1], generator=self.generator, device=dev)
        keys.masked_fill_(self.table[pick] < 0, -1.0)  # padding never wins
        slots = keys.topk(shots, dim=2).indices
        return self.table[pick].gather(2, slots), self.classes[pick]


class EpisodeBatches:
    """``steps`` draws of ``episodes`` episodes (``ways`` × ``shots``) per epoch from ``sampler``;
    each batch is the (positions, class ids) pair of :meth:`EpisodeSampler.sample`."""

    def __init__(self, sampler, ways, shots, episodes, steps):
        self.sampler, self.ways, self.shots, self.episodes, self.steps = sampler, ways, shots, episodes, steps

    def __len__(self):
        return self.steps

    def epoch(self, skip=0, start_state=None):
        for _ in range(self.steps - skip):  # each draw is fresh: skipped ones are simply not drawn
            yield self.sampler.sample(self.ways, self.shots, self.episodes)


class BalancedBatches:
    """``steps`` class-balanced batches per epoch (SC-EGG's / TF-VAEGAN's sampler), as index tensors.

    Each batch takes min(S, B) distinct classes at random (S = the classes of ``labels``) and, for each,
    k images with replacement, k = max(B // S, 1) as in the original. With ``exact`` (the default) k is
    ⌈B / S⌉ and the rows are cut back at random to exactly B: the original returns S·⌊B/S⌋ rows, which
    for AWA2 (40 classes, B = 64) is 40 rows where the rest of its code assumes 64, and crashes (spec
    §1.8 item 3). Whenever S divides B or S ≥ B (SUN, CUB) both rules give the same batches.
    """

    def __init__(self, labels, batch_size, generator, steps, exact=True):
        self.sampler = EpisodeSampler(labels, generator)
        self.generator, self.batch_size, self.steps, self.exact = generator, batch_size, steps, exact
        s = self.sampler.classes.numel()
        self.ways = min(s, batch_size)
        self.per_class = -(-batch_size // s) if exact else max(batch_size // s, 1)

    def __len__(self):
        return self.steps

    def sample(self):
        table, counts, g = self.sampler.table, self.sampler.counts, self.generator
        dev = table.device
        pick = torch.rand(counts.numel(), generator=g, device=dev).topk(self.ways).indices
        slot = (torch.rand(self.ways, self.per_class, generator=g, device=dev) * counts[pick, None]).long()
        idx = table[pick[:, None], slot].flatten()
        if self.exact and idx.numel() > self.batch_size:
            idx = idx[torch.randperm(idx.numel(), generator=g, device=dev)[:self.batch_size]]
        return idx

    def epoch(self, skip=0, start_state=None):
        for _ in range(self.steps - skip):  # each draw is fresh: skipped ones are simply not drawn
            yield self.sample()


class RandomBatches:
    """``steps`` batches per epoch of ``batch_size`` distinct rows of ``n``, drawn uniformly and
    independently for every batch (TF-VAEGAN's ``next_seen_batch`` and f-CLSWGAN's ``next_batch``:
    ``randperm(n)[:B]``; rows recur across batches, classes are not balanced), as index tensors."""

    def __init__(self, n, batch_size, generator, steps=1):
        self.n, self.batch_size, self.generator, self.steps = n, min(batch_size, n), generator, steps

    def __len__(self):
        return self.steps

    def sample(self):
        g = self.generator
        return torch.randperm(self.n, generator=g, device=g.device)[:self.batch_size]

    def epoch(self, skip=0, start_state=None):
        for _ in range(self.steps - skip):  # each draw is fresh: skipped ones are simply not drawn
            yield self.sample()


class CriticGroups:
    """One epoch of a GAN that trains its critic several times per generator step: ``loops`` passes
    of ``iterations`` iterations, each item (pass index, [``group`` fresh batches from ``sampler``]),
    e.g. SC-EGG's 5 critic batches and then the generator batch, twice per epoch (its feedback pass)."""

    def __init__(self, sampler, loops, iterations, group):
        self.sampler, self.loops, self.iterations, self.group = sampler, loops, iterations, group

    def __len__(self):
        return self.loops * self.iterations

    def epoch(self, skip=0, start_state=None):
        for i in range(skip, self.loops * self.iterations):  # --resume: the first ``skip`` items were trained
            yield i // self.iterations, [self.sampler.sample() for _ in range(self.group)]
