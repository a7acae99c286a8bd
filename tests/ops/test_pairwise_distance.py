import pytest
import torch

from zslfast import ops
from zslfast.ops import reference
from zslfast.testing import REL_TOL, backends, devices, dtypes, product, randn, rel_err

from . import oracles

METRICS = ["sqeuclidean", "euclidean", "cosine", "dot"]


@pytest.mark.parametrize("dtype,device,metric", product(dtypes, devices, METRICS))
def test_extension_matches_reference_forward_and_grad(dtype, device, metric, gen, use_backend):
    use_backend("ext", device)  # the reference is the fallback: comparing it with itself proves nothing
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


# Element-wise bounds relative to what rounding scales with (oracles.distance_scale): float32 GEMMs
# of 19-d rows, float64 to near machine precision.
ELEMENT_TOL = {torch.float32: 2e-6, torch.float64: 1e-13}


@pytest.mark.parametrize("backend,dtype,device,metric", product(backends, dtypes, devices, METRICS))
def test_against_independent_formulas(backend, dtype, device, metric, gen, use_backend):
    """Both backends against broadcast float64 formulas, entry by entry, values and gradients."""
    use_backend(backend, device)
    x = randn(11, 19, dtype=dtype, device=device, generator=gen, requires_grad=True)
    y = randn(5, 19, dtype=dtype, device=device, generator=gen, requires_grad=True)
    out = ops.pairwise_distance(x, y, metric)
    x64, y64 = x.detach().double().requires_grad_(), y.detach().double().requires_grad_()
    expected = oracles.distance(x64, y64, metric)
    bound = ELEMENT_TOL[dtype] * oracles.distance_scale(x64, y64, metric)
    assert ((out.double() - expected).abs() <= bound).all()
    g = randn(11, 5, dtype=dtype, device=device, generator=gen)
    gx, gy = torch.autograd.grad(out, (x, y), g)
    ex, ey = torch.autograd.grad(expected, (x64, y64), g.double())
    assert rel_err(gx.double(), ex) < 10 * REL_TOL[dtype] and rel_err(gy.double(), ey) < 10 * REL_TOL[dtype]


@pytest.mark.parametrize("backend,device", product(backends, devices))
def test_float32_on_2048_d_features_against_float64(backend, device, gen, use_backend):
    """ResNet-sized, non-negative features (where ‖x‖² + ‖y‖² − 2xy cancels the most): every
    float32 entry within a small multiple of float32 rounding of the float64 distances."""
    use_backend(backend, device)
    x = torch.rand(64, 2048, generator=gen).to(device) * 3
    y = torch.rand(40, 2048, generator=gen).to(device) * 3
    for metric in METRICS:
        out = ops.pairwise_distance(x, y, metric).double()
        expected = oracles.distance(x, y, metric)
        scale = oracles.distance_scale(x, y, metric)
        assert ((out - expected).abs() <= 1e-6 * scale).all(), metric


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
