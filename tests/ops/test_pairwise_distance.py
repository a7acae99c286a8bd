import pytest
import torch

from zslfast import ops
from zslfast.ops import reference
from zslfast.testing import REL_TOL, backends, devices, dtypes, product, randn, rel_err

METRICS = ["sqeuclidean", "euclidean", "cosine", "dot"]


@pytest.mark.parametrize("backend,dtype,device,metric", product(backends, dtypes, devices, METRICS))
def test_matches_reference_forward_and_grad(backend, dtype, device, metric, gen, use_backend):
    use_backend(backend, device)
    x = randn(37, 19, dtype=dtype, device=device, generator=gen, requires_grad=True)
    y = randn(23, 19, dtype=dtype, device=device, generator=gen, requires_grad=True)
    out = ops.pairwise_distance(x, y, metric)
    xr, yr = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    ref = reference.pairwise_distance(xr, yr, metric)
    assert out.shape == (37, 23)
    assert rel_err(out, ref) < REL_TOL[dtype]
    g = randn(37, 23, dtype=dtype, device=device, generator=gen)
    gx, gy = torch.autograd.grad(out, (x, y), g)
    rx, ry = torch.autograd.grad(ref, (xr, yr), g)
    assert rel_err(gx, rx) < REL_TOL[dtype]
    assert rel_err(gy, ry) < REL_TOL[dtype]


@pytest.mark.parametrize("metric", METRICS)
def test_against_independent_formulas(metric, gen):
    x = torch.randn(11, 7, dtype=torch.float64, generator=gen)
    y = torch.randn(5, 7, dtype=torch.float64, generator=gen)
    expected = {
        "sqeuclidean": torch.cdist(x, y) ** 2,
        "euclidean": torch.cdist(x, y),
        "cosine": 1 - torch.nn.functional.cosine_similarity(x[:, None], y[None], dim=2),
        "dot": torch.einsum("nd,md->nm", x, y),
    }[metric]
    torch.testing.assert_close(ops.pairwise_distance(x, y, metric), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend,device,metric", product(backends, devices, METRICS))
def test_gradcheck(backend, device, metric, gen, use_backend):
    use_backend(backend, device)
    x = randn(6, 5, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
    y = randn(4, 5, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.pairwise_distance(a, b, metric), (x, y))


@pytest.mark.parametrize("backend,device,metric", product(backends, devices, METRICS))
def test_non_contiguous(backend, device, metric, gen, use_backend):
    use_backend(backend, device)
    base_x = randn(16, 30, dtype=torch.float64, device=device, generator=gen)
    base_y = randn(30, 9, dtype=torch.float64, device=device, generator=gen)
    x, y = base_x[:, ::2], base_y.T[:, ::2][:, :15]  # strided rows and a transposed view
    assert not x.is_contiguous() and not y.is_contiguous()
    out = ops.pairwise_distance(x, y, metric)
    assert rel_err(out, reference.pairwise_distance(x.contiguous(), y.contiguous(), metric)) < 1e-10


@pytest.mark.parametrize("backend,device,metric", product(backends, devices, METRICS))
def test_empty(backend, device, metric, use_backend):
    use_backend(backend, device)
    x = torch.zeros(0, 4, device=device, requires_grad=True)
    y = torch.randn(3, 4, device=device, requires_grad=True)
    out = ops.pairwise_distance(x, y, metric)
    assert out.shape == (0, 3)
    out.sum().backward()
    assert x.grad.shape == (0, 4) and torch.equal(y.grad, torch.zeros_like(y))


@pytest.mark.parametrize("backend", backends)
def test_zero_distance_and_zero_rows(backend, use_backend):
    use_backend(backend)
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    d = ops.pairwise_distance(x, x.detach(), "euclidean")
    assert d[0, 0] == 0
    d[0, 0].backward()
    assert torch.equal(x.grad, torch.zeros_like(x))  # subgradient 0 at zero distance, not NaN
    c = ops.pairwise_distance(x.detach(), x.detach(), "cosine")
    assert c[1, 1] == 1 and c[0, 1] == 1  # a zero row has similarity 0 with everything


def test_bad_input():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="metric"):
        ops.pairwise_distance(x, x, "manhattan")
    with pytest.raises(ValueError, match="same feature size"):
        ops.pairwise_distance(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="2-D"):
        ops.pairwise_distance(x[0], x)
    with pytest.raises(TypeError, match="same dtype"):
        ops.pairwise_distance(x, x.double())
    with pytest.raises(TypeError, match="floating-point"):
        ops.pairwise_distance(x.long(), x.long())
