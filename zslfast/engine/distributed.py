"""The process group as the rest of zslfast sees it: rank, world size, row shards and sum reductions.

Everything here is a no-op in a single process (no ``torch.distributed`` group initialised), so
callers write one code path. Under ``torchrun`` (or any initialised group: gloo on CPUs, NCCL on
GPUs) the same calls shard and reduce.
"""
import torch.distributed as dist


def world():
    """(rank, world size) of this process: (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n, rank=None, size=None):
    """The contiguous row range [start, stop) of ``n`` rows held by ``rank`` of ``size`` (default:
    this process): the first ``n % size`` ranks get one row more, every row belongs to one rank."""
    if rank is None or size is None:
        rank, size = world()
    per, extra = divmod(n, size)
    start = rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)


def all_reduce_sum(tensor):
    """Sum ``tensor`` over all ranks, in place, and return it (unchanged in a single process).
    The tensor travels to the backend's device (NCCL: the GPU, gloo: the CPU) and back.
    Integer tensors (counts) make the sum exact whatever the reduction order."""
    if world()[1] == 1:
        return tensor
    wanted = "cuda" if dist.get_backend() == "nccl" else "cpu"
    if tensor.device.type == wanted:
        dist.all_reduce(tensor)
    else:
        moved = tensor.to(wanted)
        dist.all_reduce(moved)
        tensor.copy_(moved)
    return tensor
