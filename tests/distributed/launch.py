"""Run the training CLI as a process group on this machine, the way ``torchrun`` starts it (the
environment variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), with
``torch.multiprocessing.spawn`` so that a test can also run it in float64.

float64 mode sets the default dtype to float64 and casts the loaded data: every network, every
noise draw and every loss is then computed in float64, so a distributed run and the single-process
run differ only by float64 rounding of differently ordered sums (≈1e-16 relative), and a test can
ask for equal metrics and choices instead of a tolerance."""
import dataclasses
import json
import os
import socket

import torch
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_float64(data):
    from zslfast.data.regions import RegionFeatures

    if isinstance(data.features, RegionFeatures):
        return dataclasses.replace(data, attributes=data.attributes.double(), w2v=data.w2v.double())
    return dataclasses.replace(data, features=data.features.double(), attributes=data.attributes.double())


def _worker(rank, world, port, argv, float64, env, status_dir):
    threads = max(1, (os.cpu_count() or 1) // world)  # the processes share the machine's cores
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": str(threads), **env})
    torch.set_num_threads(threads)
    import zslfast.train
    from zslfast.data.regions import RegionFeatures

    if float64:
        torch.set_default_dtype(torch.float64)
        load = zslfast.train.load_data
        zslfast.train.load_data = lambda args, config: _as_float64(load(args, config))
        read, blocks = RegionFeatures.read, RegionFeatures.blocks
        RegionFeatures.read = lambda self, idx=None: read(self, idx).double()
        RegionFeatures.blocks = lambda self, size: ((i, x.double()) for i, x in blocks(self, size))
    rc = zslfast.train.main(argv)
    with open(os.path.join(status_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"rc": rc}, f)
    exit_worker()


def exit_worker():
    """End a spawned test worker now that its status file is written: flushed output and
    ``os._exit(0)``, so that nothing in interpreter teardown (where a C++ abort has been seen) can
    turn a finished worker into a failed test. The product's own exit path is tested by the
    torchrun tests."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_group(argv, world, status_dir, float64=False, env=None):
    """Run ``python -m zslfast.train ARGV`` as ``world`` processes (one when ``world`` is 1, without
    a process group); returns every rank's exit code."""
    os.makedirs(status_dir, exist_ok=True)
    mp.spawn(_worker, args=(world, free_port(), list(argv), float64, dict(env or {}), status_dir), nprocs=world,
             join=True)
    codes = []
    for rank in range(world):
        with open(os.path.join(status_dir, f"rank{rank}.json")) as f:
            codes.append(json.load(f)["rc"])
    return codes
