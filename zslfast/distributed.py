"""Data-parallel training and evaluation on ``torch.distributed``, as the rest of zslfast sees it.

Under ``torchrun`` (gloo on CPUs, NCCL on GPUs) every process runs the same program on the same
data. The rule that makes an N-process run optimise exactly what the 1-process run optimises:

1. **The global batch is drawn on every rank.** Samplers and noise come from the run's named streams
   (:mod:`zslfast.engine.context`), which are the same on every rank, so every rank draws the same
   global batch indices and the same noise for all of its rows (a few kilobytes per step).
2. **Per-sample network work is sharded.** Each rank runs the networks on its contiguous share of
   the batch's rows (:func:`rows`, :func:`sharded`): the forward and backward passes, region-map
   reads and GEMMs are split N ways.
3. **Losses are computed on the gathered batch.** The per-row outputs are all-gathered in rank
   order (:func:`gather`, differentiable), so every rank computes the method's loss on exactly the
   1-process tensors. That is what makes batch-level losses distribute without approximation: GRW's
   random walks over the whole batch's generated points, class means, log-of-mean alignments,
   SC-EGG's gradient penalty and VAE sums, CVC's episodes. Gathering costs O(rows × output width)
   per step, never O(parameters).
4. **Gradients are averaged by DistributedDataParallel.** The networks whose forward runs on a
   shard are wrapped by :func:`parallel` (``DistributedDataParallel``). The gather's backward sums
   the (identical) loss gradient of every rank, so each rank's parameter gradient is N × its shard's
   contribution plus the contribution of everything computed on all rows alike; DDP's average over
   the ranks is then exactly the 1-process gradient (up to the order of floating-point sums).

Evaluation: test rows are sharded and only integer per-class counts are summed
(:func:`zslfast.eval.metrics.sharded_counts`), so distributed metrics equal the single-process ones
exactly. Files are read and written by rank 0 only (:func:`on_main`, :func:`is_main`); nothing here
assumes one node.

Everything here is the identity in a single process (no process group initialised): one code path,
and the single-process numbers are unchanged by it.
"""
import datetime
import gc
import os
import socket
import time

import torch
import torch.distributed as dist
from torch import nn

from zslfast.errors import ZSLError

# Seconds a collective may wait for the other ranks before the job fails (ZSLFAST_DIST_TIMEOUT).
DEFAULT_TIMEOUT_S = 1800


def world():
    """(rank, world size) of this process: (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main():
    """Whether this process is rank 0 (the one that prints, writes files and checkpoints)."""
    return world()[0] == 0


def shard(n, rank=None, size=None):
    """The contiguous row range [start, stop) of ``n`` rows held by ``rank`` of ``size`` (default:
    this process): the first ``n % size`` ranks get one row more, every row belongs to one rank."""
    if rank is None or size is None:
        rank, size = world()
    per, extra = divmod(n, size)
    start = rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)


def _wire_device():
    """Where the backend's tensors must live: the GPU for NCCL, the CPU for gloo."""
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def all_reduce_sum(tensor):
    """Sum ``tensor`` over all ranks, in place, and return it (unchanged in a single process).
    The tensor travels to the backend's device (NCCL: the GPU, gloo: the CPU) and back.
    Integer tensors (counts) make the sum exact whatever the reduction order."""
    if world()[1] == 1:
        return tensor
    wanted = _wire_device()
    if tensor.device.type == wanted:
        dist.all_reduce(tensor)
    else:
        moved = tensor.to(wanted)
        dist.all_reduce(moved)
        tensor.copy_(moved)
    return tensor


def rows(tensor):
    """This rank's contiguous share of the rows of a global (replicated) tensor; the tensor itself
    in a single process."""
    size = world()[1]
    if size == 1:
        return tensor
    start, stop = shard(tensor.shape[0])
    return tensor[start:stop]


class _Gather(torch.autograd.Function):
    """All-gather of row shards in rank order (shards may differ by one row). Backward: every rank
    computed the same loss from the gathered tensor, so the gradient of this rank's rows is the sum
    of all ranks' gradients of them (N × the common value), which DDP's average turns into the
    1-process gradient (module docstring, rule 4)."""

    @staticmethod
    def forward(ctx, local, n):
        rank, size = world()
        sizes = [b - a for a, b in (shard(n, r, size) for r in range(size))]
        if local.shape[0] != sizes[rank]:
            raise RuntimeError(f"gather: rank {rank} holds {local.shape[0]} rows of {n}, expected {sizes[rank]}")
        ctx.n = n
        wanted = _wire_device()
        width = max(sizes)
        padded = local.new_zeros((width,) + tuple(local.shape[1:]), device=wanted)
        padded[:local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(local.device)

    @staticmethod
    def backward(ctx, grad):
        total = all_reduce_sum(grad.contiguous().clone())
        start, stop = shard(ctx.n)
        return total[start:stop], None


def gather(local, n):
    """The global [n, ...] tensor from every rank's rows ``local`` (see :func:`rows`), in rank order
    and differentiable; ``local`` itself in a single process."""
    if world()[1] == 1:
        return local
    return _Gather.apply(local, n)


def sharded(fn, *rowwise):
    """``fn(*rowwise)`` computed data-parallel: ``fn`` runs on this rank's rows of every row-aligned
    argument and its output (a tensor, or a tuple of tensors) is gathered back to all rows. In a
    single process this is exactly ``fn(*rowwise)``."""
    if world()[1] == 1:
        return fn(*rowwise)
    n = rowwise[0].shape[0]
    out = fn(*[rows(t) for t in rowwise])
    if isinstance(out, tuple):
        return tuple(gather(o, n) for o in out)
    return gather(out, n)


# Every DDP wrapper this process made (parallel), released by shutdown() before it leaves the group.
_WRAPPERS = []
# What ties a wrapper to its process group: DDP's C++ logger and reducer, and the group handle.
_GROUP_ATTRIBUTES = ("logger", "reducer", "process_group")


def parallel(module):
    """``module`` wrapped in :class:`torch.nn.parallel.DistributedDataParallel` in a process group
    (its forward must run on this rank's rows; gradients are averaged over the ranks in its
    backward), the module itself in a single process. The wrapper is registered so that
    :func:`shutdown` can release its hold on the group first."""
    if world()[1] == 1:
        return module
    p = next((p for p in module.parameters() if p.requires_grad), None)
    if p is None:
        raise ValueError(f"parallel: {type(module).__name__} has no parameter that requires grad")
    device_ids = [p.device.index] if p.device.type == "cuda" else None
    # Buffers are synchronised once at construction (every rank computes the same ones anyway).
    wrapper = nn.parallel.DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
    _WRAPPERS.append(wrapper)
    return wrapper


def release_wrappers():
    """Drop every registered DDP wrapper's logger, reducer and process-group handle: a wrapper that
    is still referenced (from a traceback, a closure, a test) then holds nothing of the group, and
    the group's C++ objects are freed when the group is destroyed, not at interpreter exit."""
    while _WRAPPERS:
        wrapper = _WRAPPERS.pop()
        for name in _GROUP_ATTRIBUTES:
            wrapper.__dict__.pop(name, None)


def any_rank(flag):
    """Whether ``flag`` is true on any rank (one tiny all-reduce in a process group)."""
    if world()[1] == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_wire_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def on_main(fn):
    """``fn()`` run on rank 0 only (a file read, a check of the output folder) and its result sent
    to every rank; a :class:`ZSLError` it raises is raised on every rank, so all ranks stop with the
    same one-line message. In a single process: ``fn()``."""
    if world()[1] == 1:
        return fn()
    box = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except ZSLError as exc:
            box[0] = ("error", str(exc))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise ZSLError(value)
    return value


def all_succeeded():
    """A barrier that every rank passes only once all of them got here: called before rank 0 writes
    a run's results, so a job in which any rank failed writes none."""
    if world()[1] > 1:
        any_rank(False)


def launched():
    """Whether this process was started by ``torchrun`` (or another launcher) as one of several:
    ``WORLD_SIZE`` > 1 in the environment."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device):
    """Join the process group of a ``torchrun`` launch (``env://``: RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) and return the device this rank trains on: ``cuda:LOCAL_RANK`` with NCCL when
    ``device`` is a CUDA device (or ``auto`` on a GPU machine), the CPU with gloo otherwise.
    Outside a launch nothing happens and ``device`` is returned."""
    if not launched() or world()[1] > 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index not in (None, local):
            raise ZSLError(f"--device {device}: under torchrun every process uses cuda:LOCAL_RANK; pass --device cuda")
        if local >= torch.cuda.device_count():
            raise ZSLError(f"LOCAL_RANK {local}: this node has {torch.cuda.device_count()} CUDA device(s); start at "
                           "most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=float(os.environ.get("ZSLFAST_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    peers = [None] * dist.get_world_size()  # every rank's (host, pid): to name the one that died (lost_ranks)
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    _PEERS[:] = peers
    return device


_PEERS = []  # (host, pid) of every rank of this job, in rank order


def _alive(pid):
    """Whether process ``pid`` of this host still runs (a zombie, not yet reaped by torchrun, has died)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def lost_ranks():
    """[(rank, pid)] of the ranks on this host whose process has ended (ranks on other hosts cannot be
    checked from here)."""
    host = socket.gethostname()
    return [(r, pid) for r, (h, pid) in enumerate(_PEERS) if h == host and pid != os.getpid() and not _alive(pid)]


def describe_failure(exc):
    """One line for a launched run that failed with ``exc`` (not a zslfast error): which rank died
    when this rank lost contact with it (a collective failed), else this rank's own exception."""
    time.sleep(0.3)  # the dead rank's process may need a moment to be gone
    dead = lost_ranks()
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    if dead:
        who = ", ".join(f"rank {r} (pid {pid})" for r, pid in dead)
        return (f"{who} died (killed by a signal, out of memory, or crashed: its own message, if any, is above); "
                f"this rank stopped when it lost contact ({type(exc).__name__})")
    return f"{type(exc).__name__}: {first}"


def shutdown(together=False):
    """Leave the process group (at the end of a launched run).

    The run's DDP wrappers sit in reference cycles and may be referenced from elsewhere, so they
    could be freed only at interpreter exit, after the group is gone. Twice in CI a rank of a
    successful 2-process test aborted there ("terminate called without an active exception"), the
    likely cause (not reproduced). So every wrapper first lets go of the group
    (:func:`release_wrappers`) and is collected. ``together``: the ranks ended alike (success, or
    a stop they agreed on), so they also meet at a barrier and tear their connections down at the
    same point; never after a failure, where a rank may be gone."""
    if dist.is_available() and dist.is_initialized():
        release_wrappers()
        gc.collect()
        if together:
            try:
                dist.barrier()
            except RuntimeError:  # a rank failed after all (e.g. rank 0 writing results): leave anyway
                pass
        dist.destroy_process_group()
