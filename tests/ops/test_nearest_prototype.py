import pytest
import torch

from zslfast import ops
from zslfast.testing import backends, devices, dtypes, product, randn

from . import oracles

METRICS = ["sqeuclidean", "euclidean", "cosine", "dot"]


def _full_matrix_answer(x, p, metric):
    """The full float64 distance matrix from independent broadcast formulas, and its arg-best."""
    d = oracles.distance(x, p, metric)
    return d, (d.argmax(1) if metric == "dot" else d.argmin(1))


@pytest.mark.parametrize("backend,dtype,device,metric", product(backends, dtypes, devices, METRICS))
@pytest.mark.parametrize("block_rows", [None, 1, 7])
def test_equals_argmin_of_full_matrix(backend, dtype, device, metric, block_rows, gen, use_backend):
    use_backend(backend, device)
    x = randn(101, 24, dtype=dtype, device=device, generator=gen)
    p = randn(13, 24, dtype=dtype, device=device, generator=gen)
    idx = ops.nearest_prototype(x, p, metric, block_rows=block_rows)
    d, expected = _full_matrix_answer(x.double(), p.double(), metric)
    assert idx.dtype == torch.long and idx.shape == (101,)
    if dtype == torch.float64:
        assert torch.equal(idx, expected)
    else:
        # float32 rounding may only flip a near-tie: the chosen prototype is as close as the best.
        rows = torch.arange(101, device=device)
        gap = (d[rows, idx] - d[rows, expected]).abs()
        assert (idx == expected).float().mean() > 0.95 and gap.max() < 1e-4


@pytest.mark.parametrize("backend,device", product(backends, devices))
def test_ties_pick_lowest_index_and_empty(backend, device, use_backend):
    use_backend(backend, device)
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], device=device)
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0]], device=device)
    assert ops.nearest_prototype(x, p, "cosine").tolist() == [0, 2]
    assert ops.nearest_prototype(x, p, "sqeuclidean").tolist() == [0, 2]
    assert ops.nearest_prototype(torch.zeros(0, 2, device=device), p).shape == (0,)


@pytest.mark.parametrize("backend,device", product(backends, devices))
def test_non_contiguous(backend, device, gen, use_backend):
    use_backend(backend, device)
    x = randn(40, 20, dtype=torch.float64, device=device, generator=gen)[:, ::2]
    p = randn(10, 12, dtype=torch.float64, device=device, generator=gen).T  # a transposed view, 12×10
    assert not x.is_contiguous() and not p.is_contiguous()
    assert torch.equal(ops.nearest_prototype(x, p, "sqeuclidean"), _full_matrix_answer(x, p, "sqeuclidean")[1])


def test_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least one prototype"):
        ops.nearest_prototype(x, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="block_rows"):
        ops.nearest_prototype(x, x, block_rows=0)
    with pytest.raises(ValueError, match="same feature size"):
        ops.nearest_prototype(x, torch.randn(2, 5))
