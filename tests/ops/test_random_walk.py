import pytest
import torch

from zslfast import ops
from zslfast.ops import reference
from zslfast.testing import REL_TOL, backends, devices, dtypes, product, randn, rel_err

from . import oracles

METRICS = ["cosine", "sqeuclidean"]


@pytest.mark.parametrize("dtype,device,metric", product(dtypes, devices, METRICS))
@pytest.mark.parametrize("steps", [0, 1, 4])
def test_extension_matches_reference(dtype, device, metric, steps, gen, use_backend):
    use_backend("ext", device)  # the reference is the fallback: comparing it with itself proves nothing
    c = randn(7, 11, dtype=dtype, device=device, generator=gen, requires_grad=True)
    x = randn(40, 11, dtype=dtype, device=device, generator=gen, requires_grad=True)
    temperature = 0.5 if metric == "cosine" else 8.0
    T = ops.random_walk_landing(c, x, steps, temperature, metric)
    cr, xr = c.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    R = reference.random_walk_landing(cr, xr, steps, temperature, metric)
    assert rel_err(T, R) < REL_TOL[dtype]
    g = randn(*T.shape, dtype=dtype, device=device, generator=gen)
    for a, b in zip(torch.autograd.grad(T, (c, x), g), torch.autograd.grad(R, (cr, xr), g)):
        assert rel_err(a, b) < REL_TOL[dtype] * 10


# Entry-wise relative error of the landing probabilities (each at least ~1e-3 here).
WALK_TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


@pytest.mark.parametrize("backend,dtype,device,metric", product(backends, dtypes, devices, METRICS))
@pytest.mark.parametrize("steps", [0, 1, 4])
def test_against_explicit_matrix_powers(backend, dtype, device, metric, steps, gen, use_backend):
    """Both backends against P_cx·P_xx^t·P_xc with explicit float64 matrix powers of independent
    transition matrices, entry by entry, values and gradients; landing rows are distributions."""
    use_backend(backend, device)
    c = randn(7, 11, dtype=dtype, device=device, generator=gen, requires_grad=True)
    x = randn(40, 11, dtype=dtype, device=device, generator=gen, requires_grad=True)
    temperature = 0.5 if metric == "cosine" else 8.0
    T = ops.random_walk_landing(c, x, steps, temperature, metric)
    assert T.shape == (steps + 1, 7, 7)
    c64, x64 = c.detach().double().requires_grad_(), x.detach().double().requires_grad_()
    expected = oracles.walk(c64, x64, steps, temperature, metric)
    assert ((T.double() - expected).abs() / expected).max() < WALK_TOL[dtype]
    torch.testing.assert_close(T.sum(2), torch.ones(steps + 1, 7, dtype=dtype, device=device),
                               rtol=0, atol=1e3 * torch.finfo(dtype).eps)
    g = randn(*T.shape, dtype=dtype, device=device, generator=gen)
    for a, b in zip(torch.autograd.grad(T, (c, x), g), torch.autograd.grad(expected, (c64, x64), g.double())):
        assert rel_err(a.double(), b) < REL_TOL[dtype] * 20


@pytest.mark.parametrize("backend,device,metric", product(backends, devices, METRICS))
def test_gradcheck(backend, device, metric, gen, use_backend):
    use_backend(backend, device)
    c = randn(3, 4, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
    x = randn(6, 4, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.random_walk_landing(a, b, 3, 0.8, metric), (c, x))


def test_uniform_walk_closed_form():
    # All points identical and centers identical: every transition is uniform, so each landing
    # matrix is uniform over the K centers whatever the number of steps.
    c = torch.ones(4, 3, dtype=torch.float64)
    x = torch.ones(9, 3, dtype=torch.float64)
    T = ops.random_walk_landing(c, x, steps=3)
    torch.testing.assert_close(T, torch.full((4, 4, 4), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("backend,device", product(backends, devices))
def test_non_contiguous(backend, device, gen, use_backend):
    use_backend(backend, device)
    c = randn(5, 16, dtype=torch.float64, device=device, generator=gen)[:, ::2]
    x = randn(8, 20, dtype=torch.float64, device=device, generator=gen).T
    T = ops.random_walk_landing(c, x, 2)
    assert rel_err(T, reference.random_walk_landing(c.contiguous(), x.contiguous(), 2)) < 1e-10


def test_bad_input():
    c, x = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="steps"):
        ops.random_walk_landing(c, x, -1)
    with pytest.raises(ValueError, match="same feature size"):
        ops.random_walk_landing(c, torch.randn(5, 3), 2)
    with pytest.raises(ValueError, match="single point"):
        ops.random_walk_landing(c, x[:1], 2)


@pytest.mark.parametrize("backend,device,metric", product(backends, devices, METRICS))
def test_large_set_matches_explicit_powers(backend, device, metric, gen, use_backend):
    # M = 600 points: the symmetric-GEMM path of P_xx is taken.
    use_backend(backend, device)
    c = randn(20, 16, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
    x = randn(600, 16, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
    temperature = 0.3 if metric == "cosine" else 6.0
    T = ops.random_walk_landing(c, x, 3, temperature, metric)
    cd, xd = c.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    D = oracles.walk(cd, xd, 3, temperature, metric)
    assert ((T - D).abs() / D).max() < 1e-9
    g = randn(*T.shape, dtype=torch.float64, device=device, generator=gen)
    for a, b in zip(torch.autograd.grad(T, (c, x), g), torch.autograd.grad(D, (cd, xd), g)):
        assert rel_err(a, b) < 1e-9
