"""Sharded evaluation (zslfast.distributed + zslfast.eval.metrics) in a real 2-process gloo
group on the CPU: every rank scores its own rows and the per-class counts are summed, and the
metrics equal the single-process ones exactly."""
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zslfast.data import make_synthetic
from tests.distributed.launch import exit_worker
from zslfast import distributed
from zslfast.distributed import all_reduce_sum, shard, world
from zslfast.eval.metrics import continual_task_metrics, per_class_accuracy, zsl_gzsl_metrics

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _scorer(data):
    w = torch.randn(data.features.shape[1], data.num_classes, generator=torch.Generator().manual_seed(3),
                    dtype=data.features.dtype)
    return lambda x: x @ w


def _metrics(batch_size):
    data = make_synthetic(seed=0)
    score = _scorer(data)
    return {"zsl": zsl_gzsl_metrics(score, data, calibration=0.5, batch_size=batch_size),
            "task": continual_task_metrics(lambda x: score(x).argmax(1), data.features, data.labels,
                                           data.splits["test_seen"], data.splits["test_unseen"], batch_size)}


def _rank(rank, size, init, out, batch_sizes):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    ok = False
    try:
        result = {"world": list(world()), "shard": list(shard(10)),
                  "metrics": {b: _metrics(b) for b in batch_sizes},
                  "sum": int(all_reduce_sum(torch.tensor([rank + 1]))[0])}
        ok = True
    finally:
        distributed.shutdown(together=ok)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    exit_worker()


def test_shards_cover_every_row_once():
    for n in (0, 1, 7, 10):
        for size in (1, 2, 3):
            ranges = [shard(n, r, size) for r in range(size)]
            assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


def test_blocked_counts_equal_the_full_prediction():
    data = make_synthetic(seed=0)
    score = _scorer(data)
    xu, yu = data.subset("test_unseen")
    full = per_class_accuracy(score(xu).argmax(1), yu)  # the whole score matrix at once
    got = continual_task_metrics(lambda x: score(x).argmax(1), data.features, data.labels,
                                 data.splits["test_unseen"][:0], data.splits["test_unseen"], batch_size=37)
    assert got["U"] == 100 * full


def test_two_gloo_processes_give_the_single_process_metrics_exactly(tmp_path):
    """One block for all rows (8192) and blocks of 50 that split each rank's rows, in one group."""
    batch_sizes = [8192, 50]
    single = {str(b): _metrics(b) for b in batch_sizes}
    mp.spawn(_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path), batch_sizes), nprocs=2, join=True)
    for rank in range(2):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["world"] == [rank, 2] and r["sum"] == 3
        assert r["shard"] == [[0, 5], [5, 10]][rank]
        assert r["metrics"] == json.loads(json.dumps(single))  # every rank holds the reduced result
