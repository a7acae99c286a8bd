import pytest
import torch

from zslfast import ops
from zslfast.ops import reference
from zslfast.testing import REL_TOL, backends, devices, dtypes, product, randn, rel_err

from . import oracles

METRICS = ["cosine", "sqeuclidean"]


@pytest.mark.parametrize("dtype,device,metric,exclude_self", product(dtypes, devices, METRICS, [False, True]))
def test_extension_matches_reference(dtype, device, metric, exclude_self, gen, use_backend):
    use_backend("ext", device)  # the reference is the fallback: comparing it with itself proves nothing
    n = 29
    x = randn(n, 13, dtype=dtype, device=device, generator=gen, requires_grad=True)
    y = x if exclude_self else randn(17, 13, dtype=dtype, device=device, generator=gen, requires_grad=True)
    temperature = 0.3 if metric == "cosine" else 5.0
    P = ops.transition_matrix(x, y, temperature, metric, exclude_self)
    xr = x.detach().clone().requires_grad_()
    yr = xr if exclude_self else y.detach().clone().requires_grad_()
    R = reference.transition_matrix(xr, yr, temperature, metric, exclude_self)
    assert rel_err(P, R) < REL_TOL[dtype]
    g = randn(*P.shape, dtype=dtype, device=device, generator=gen)
    inputs, ref_inputs = ((x,), (xr,)) if exclude_self else ((x, y), (xr, yr))
    for a, b in zip(torch.autograd.grad(P, inputs, g), torch.autograd.grad(R, ref_inputs, g)):
        assert rel_err(a, b) < REL_TOL[dtype] * 10  # gradients accumulate two GEMMs of rounding


LOG_TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def _check_log_probs(P, expected_log, dtype, logit_scale=1.0):
    """Entry by entry: log P within LOG_TOL (times the logits' magnitude, which float32 rounds) of
    the float64 log-probabilities wherever those are representable; where float64 says the
    probability is below float32's range, P must be (almost) zero too; rows sum to one; a masked
    diagonal is exactly zero."""
    P = P.detach().double()
    assert torch.isfinite(P).all() and (P >= 0).all()
    tiny = torch.finfo(dtype).tiny * 1e6
    big = expected_log > torch.log(torch.tensor(tiny, dtype=torch.float64))
    err = (torch.log(P[big].clamp_min(1e-300)) - expected_log[big]).abs()
    assert err.max() <= LOG_TOL[dtype] * max(1.0, logit_scale), float(err.max())
    assert (P[~big] <= 1e3 * tiny).all()
    torch.testing.assert_close(P.sum(1), torch.ones(P.shape[0], dtype=torch.float64), rtol=0,
                               atol=20 * torch.finfo(dtype).eps * P.shape[1])
    masked = torch.isinf(expected_log)
    assert (P[masked] == 0).all()


@pytest.mark.parametrize("backend,dtype,device,metric,exclude_self",
                         product(backends, dtypes, devices, METRICS, [False, True]))
def test_against_independent_log_softmax(backend, dtype, device, metric, exclude_self, gen, use_backend):
    """Both backends against float64 log_softmax of broadcast similarities, entry by entry in log
    space (small probabilities count as much as large ones), with the invariants."""
    use_backend(backend, device)
    x = randn(29, 13, dtype=dtype, device=device, generator=gen)
    y = x if exclude_self else randn(17, 13, dtype=dtype, device=device, generator=gen)
    temperature = 0.3 if metric == "cosine" else 5.0
    P = ops.transition_matrix(x, y, temperature, metric, exclude_self)
    expected = oracles.log_transition(x, y, temperature, metric, exclude_self)
    scale = (1 / temperature) if metric == "cosine" else float(oracles.distance(x, y, "sqeuclidean").max()) / temperature
    _check_log_probs(P, expected, dtype, scale)


@pytest.mark.parametrize("backend,dtype,device,exclude_self", product(backends, dtypes, devices, [False, True]))
def test_large_logits_against_float64(backend, dtype, device, exclude_self, gen, use_backend):
    """Logits of ±100 (cosine at T = 0.01) and of thousands (squared distances of 2048-d features
    at T = 1): a softmax that skipped the row maximum would overflow, one that flushed small
    probabilities early would lose their logs."""
    use_backend(backend, device)
    x = randn(40, 16, dtype=dtype, device=device, generator=gen)
    y = x if exclude_self else randn(25, 16, dtype=dtype, device=device, generator=gen)
    P = ops.transition_matrix(x, y, 0.01, "cosine", exclude_self)
    _check_log_probs(P, oracles.log_transition(x, y, 0.01, "cosine", exclude_self), dtype, 100.0)
    f = torch.rand(30, 2048, generator=gen, dtype=dtype).to(device) * 2
    g = f if exclude_self else torch.rand(20, 2048, generator=gen, dtype=dtype).to(device) * 2
    P = ops.transition_matrix(f, g, 1.0, "sqeuclidean", exclude_self)
    expected = oracles.log_transition(f, g, 1.0, "sqeuclidean", exclude_self)
    # logits are about −1300 here; float32 rounds the squared distances at ~1e-7 of ‖f‖² + ‖g‖²
    scale = float(oracles.distance_scale(f, g, "sqeuclidean").max())
    _check_log_probs(P, expected, dtype, scale)


@pytest.mark.parametrize("backend,device,metric,exclude_self", product(backends, devices, METRICS, [False, True]))
def test_gradcheck(backend, device, metric, exclude_self, gen, use_backend):
    use_backend(backend, device)
    x = randn(6, 4, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
    if exclude_self:
        assert torch.autograd.gradcheck(lambda a: ops.transition_matrix(a, a, 0.7, metric, True), (x,))
    else:
        y = randn(5, 4, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b: ops.transition_matrix(a, b, 0.7, metric), (x, y))


def test_hand_computed():
    # Two orthogonal unit vectors and their sum: cosine similarities are known in closed form.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    P = ops.transition_matrix(x, x, temperature=0.5, metric="cosine", exclude_self=True)
    c = 2 ** -0.5 / 0.5  # cos 45° / T
    e0, ec = 1.0, torch.exp(torch.tensor(c, dtype=torch.float64))  # exp(0/T) = 1
    expected = torch.stack([
        torch.stack([torch.tensor(0.0, dtype=torch.float64), e0 / (e0 + ec), ec / (e0 + ec)]),
        torch.stack([e0 / (e0 + ec), torch.tensor(0.0, dtype=torch.float64), ec / (e0 + ec)]),
        torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)])
    torch.testing.assert_close(P, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend,device", product(backends, devices))
def test_non_contiguous_and_empty(backend, device, gen, use_backend):
    use_backend(backend, device)
    x = randn(12, 20, dtype=torch.float64, device=device, generator=gen)[:, 1::2]
    y = randn(10, 9, dtype=torch.float64, device=device, generator=gen).T
    assert rel_err(ops.transition_matrix(x, y), reference.transition_matrix(x.contiguous(), y.contiguous())) < 1e-10
    e = torch.zeros(0, 10, dtype=torch.float64, device=device, requires_grad=True)
    P = ops.transition_matrix(e, y.contiguous())
    assert P.shape == (0, 9)
    P.sum().backward()
    assert e.grad.shape == (0, 10)


def test_bad_input():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        ops.transition_matrix(x, x, temperature=0)
    with pytest.raises(ValueError, match="metric"):
        ops.transition_matrix(x, x, metric="dot")
    with pytest.raises(ValueError, match="same number of rows"):
        ops.transition_matrix(x, x[:3], exclude_self=True)
    with pytest.raises(ValueError, match="single point"):
        ops.transition_matrix(x[:1], x[:1], exclude_self=True)


@pytest.mark.parametrize("backend,device,metric", product(backends, devices, METRICS))
@pytest.mark.parametrize("n", [530, 1100])  # 2 and 4 diagonal blocks in the symmetric GEMM, ragged ends
def test_self_transition_large(backend, device, metric, n, gen, use_backend):
    use_backend(backend, device)
    x = randn(n, 24, dtype=torch.float64, device=device, generator=gen, requires_grad=True)
    temperature = 0.2 if metric == "cosine" else 10.0
    P = ops.transition_matrix(x, x, temperature, metric, exclude_self=True)  # y is x: the self path
    xr = x.detach().clone().requires_grad_()
    R = reference.transition_matrix(xr, xr, temperature, metric, exclude_self=True)
    assert rel_err(P, R) < 1e-10
    g = randn(n, n, dtype=torch.float64, device=device, generator=gen)
    assert rel_err(torch.autograd.grad(P, x, g)[0], torch.autograd.grad(R, xr, g)[0]) < 1e-9
    # and the general path (a distinct but equal y) agrees with the self path
    y = x.detach().clone()
    assert rel_err(ops.transition_matrix(x.detach(), y, temperature, metric, True), P.detach()) < 1e-12
