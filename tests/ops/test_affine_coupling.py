import pytest
import torch

from zslfast import ops
from zslfast.ops import reference
from zslfast.testing import REL_TOL, backends, devices, dtypes, product, randn, rel_err

from . import oracles

MODES = ["atan", "atan_scaled", "tanh", "none"]


def _inputs(b, l, dtype, device, gen, requires_grad=False):
    return tuple(randn(b, l, dtype=dtype, device=device, generator=gen, requires_grad=requires_grad)
                 for _ in range(3))


@pytest.mark.parametrize("dtype,device,mode,reverse", product(dtypes, devices, MODES, [False, True]))
def test_extension_matches_reference_forward_and_grad(dtype, device, mode, reverse, gen, use_backend):
    use_backend("ext", device)  # the reference is the fallback: comparing it with itself proves nothing
    x, s, t = _inputs(9, 37, dtype, device, gen, requires_grad=True)  # 37: exercises vector tails
    y, logdet = ops.affine_coupling(x, s, t, 1.7, mode, reverse)
    refs = [a.detach().clone().requires_grad_() for a in (x, s, t)]
    ry, rl = reference.affine_coupling(*refs, 1.7, mode, reverse)
    assert rel_err(y, ry) < REL_TOL[dtype] and rel_err(logdet, rl) < REL_TOL[dtype]
    gy, gl = randn(9, 37, dtype=dtype, device=device, generator=gen), randn(9, dtype=dtype, device=device, generator=gen)
    ours = torch.autograd.grad((y, logdet), (x, s, t), (gy, gl))
    theirs = torch.autograd.grad((ry, rl), refs, (gy, gl))
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) < REL_TOL[dtype]


@pytest.mark.parametrize("backend,dtype,device,mode,reverse", product(backends, dtypes, devices, MODES, [False, True]))
def test_against_the_written_out_formulas(backend, dtype, device, mode, reverse, gen, use_backend):
    """Both backends against y = x·e^s + t (or (x − t)·e^−s) with the clamp written out in float64,
    entry by entry, values and gradients."""
    use_backend(backend, device)
    x, s, t = _inputs(9, 37, dtype, device, gen, requires_grad=True)
    y, logdet = ops.affine_coupling(x, s, t, 1.7, mode, reverse)
    refs = [a.detach().double().requires_grad_() for a in (x, s, t)]
    ey, el = oracles.coupling(*refs, 1.7, mode, reverse)
    eps = torch.finfo(dtype).eps
    assert ((y.double() - ey).abs() <= 8 * eps * (ey.abs() + refs[2].detach().abs() + 1)).all()
    assert ((logdet.double() - el).abs() <= 8 * eps * 37 * (1 + el.abs())).all()
    gy, gl = randn(9, 37, dtype=dtype, device=device, generator=gen), randn(9, dtype=dtype, device=device, generator=gen)
    ours = torch.autograd.grad((y, logdet), (x, s, t), (gy, gl))
    theirs = torch.autograd.grad((ey, el), refs, (gy.double(), gl.double()))
    for a, b in zip(ours, theirs):
        assert rel_err(a.double(), b) < 10 * REL_TOL[dtype]


def _sweep_values():
    mags = torch.logspace(-30, 30, 601, dtype=torch.float64)
    return torch.cat([-mags.flip(0), torch.zeros(1, dtype=torch.float64), mags,
                      torch.tensor([float("inf"), -float("inf")], dtype=torch.float64)])


@pytest.mark.parametrize("backend,mode,reverse", product(backends, ["atan", "atan_scaled", "tanh"], [False, True]))
@pytest.mark.parametrize("clamp", [0.5, 1.0, 80.0])
def test_float32_clamp_and_exp_sweep_within_a_few_ulp(backend, mode, reverse, clamp, use_backend):
    """The float32 clamp (the CPU kernel's own atan) and e^(±s) (its bounded exp where built), each
    claimed within ~2 ulp over all floats, on s_raw over ±logspace(−30, 30), 0 and ±inf with clamps
    up to the bound of 80. With one value per row the log-det is exactly the float32 s the kernel
    used: s within 6 ulp of the float64 clamp (the polynomial's 2 ulp plus the roundings of
    clamp·0.636·atan), and y within 4 ulp of e^(±s) for that s (exp's own error, not the rounding of
    s amplified by |s|). The same values in one long row (whole SIMD vectors instead of one-lane
    tails) give bit-identical results. NaN in, NaN out."""
    use_backend(backend)
    u64 = _sweep_values()
    u = u64.float()[:, None]
    one, zero = torch.ones_like(u), torch.zeros_like(u)
    y, logdet = ops.affine_coupling(one, u, zero, clamp, mode, reverse)
    s_used = (-logdet if reverse else logdet).double()
    s64 = oracles.clamp_log_scale(u64, clamp, mode)
    s_ulps = (s_used - s64).abs() / oracles.ulp32(s64)
    assert float(s_ulps.max()) <= 6, (float(s_ulps.max()), float(u64[int(s_ulps.argmax())]))
    assert (s_used.abs() <= oracles.freia_clamp_bound(clamp, mode) * (1 + 1e-6)).all()
    ey = torch.exp(-s_used if reverse else s_used)
    y_ulps = (y[:, 0].double() - ey).abs() / oracles.ulp32(ey)
    assert float(y_ulps.max()) <= 4, (float(y_ulps.max()), float(u64[int(y_ulps.argmax())]))
    y_row, _ = ops.affine_coupling(one.T.contiguous(), u.T.contiguous(), zero.T.contiguous(), clamp, mode, reverse)
    assert torch.equal(y_row[0], y[:, 0])
    rows = torch.tensor([[0.5, float("nan"), 2.0] * 11], dtype=torch.float32)
    yn, ln = ops.affine_coupling(torch.ones_like(rows), rows, torch.zeros_like(rows), clamp, mode, reverse)
    assert torch.isnan(yn[0, 1::3]).all() and torch.isfinite(yn[0, 0::3]).all() and torch.isnan(ln).all()


@pytest.mark.parametrize("backend,device,mode,reverse", product(backends, devices, MODES, [False, True]))
def test_gradcheck(backend, device, mode, reverse, gen, use_backend):
    use_backend(backend, device)
    inputs = _inputs(4, 5, torch.float64, device, gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: ops.affine_coupling(a, b, c, 1.5, mode, reverse), inputs)


@pytest.mark.parametrize("backend,dtype,device,mode", product(backends, dtypes, devices, MODES))
def test_inverse_and_logdets_cancel(backend, dtype, device, mode, gen, use_backend):
    use_backend(backend, device)
    x, s, t = _inputs(16, 33, dtype, device, gen)
    y, ld = ops.affine_coupling(x, s, t, 2.0, mode)
    x_back, ld_rev = ops.affine_coupling(y, s, t, 2.0, mode, reverse=True)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(x_back, x, rtol=tol, atol=tol)
    torch.testing.assert_close(ld + ld_rev, torch.zeros_like(ld), rtol=0, atol=tol * 33)


@pytest.mark.parametrize("backend,mode,reverse", product(backends, MODES, [False, True]))
def test_logdet_is_log_abs_det_jacobian(backend, mode, reverse, gen, use_backend):
    use_backend(backend)
    x, s, t = _inputs(3, 4, torch.float64, "cpu", gen)
    for b in range(3):
        def f(v):
            return ops.affine_coupling(v[None], s[b:b + 1], t[b:b + 1], 1.3, mode, reverse)[0][0]

        # torch.func transforms cannot see through ops whose autograd comes from
        # torch.library.register_autograd (pytorch/pytorch#179652), so the extension's Jacobian is
        # taken with torch.autograd.functional.jacobian; the reference's with torch.func.jacrev.
        jac = torch.func.jacrev(f)(x[b]) if backend == "torch" else torch.autograd.functional.jacobian(f, x[b])
        _, logabsdet = torch.linalg.slogdet(jac)
        logdet = ops.affine_coupling(x[b:b + 1], s[b:b + 1], t[b:b + 1], 1.3, mode, reverse)[1]
        torch.testing.assert_close(logdet[0], logabsdet, rtol=1e-12, atol=1e-12)


def test_clamp_formulas_by_hand():
    u = torch.tensor([[-3.0, 0.0, 0.5, 10.0]], dtype=torch.float64)
    zero, one = torch.zeros_like(u), torch.ones_like(u)
    c = 2.0
    expected = {
        "atan": c * 0.636 * torch.atan(u),
        "atan_scaled": c * 0.636 * torch.atan(u / c),
        "tanh": c * torch.tanh(u / c),
        "none": u,
    }
    for mode, s in expected.items():
        y, logdet = ops.affine_coupling(one, u, zero, c, mode)
        torch.testing.assert_close(y, torch.exp(s))
        torch.testing.assert_close(logdet, s.sum(1))
    # The two FrEIA eras agree at clamp = 1 (why GSMFlow's results do not depend on the era).
    a = ops.affine_coupling(one, u, zero, 1.0, "atan")[0]
    b = ops.affine_coupling(one, u, zero, 1.0, "atan_scaled")[0]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend,device", product(backends, devices))
def test_non_contiguous_and_empty(backend, device, gen, use_backend):
    use_backend(backend, device)
    x, s, t = (a.T for a in _inputs(8, 6, torch.float64, device, gen))
    assert not x.is_contiguous()
    y, ld = ops.affine_coupling(x, s, t, 1.0, "atan")
    ry, rl = reference.affine_coupling(x, s, t, 1.0, "atan")
    assert rel_err(y, ry) < 1e-10 and rel_err(ld, rl) < 1e-10
    e = torch.zeros(0, 5, device=device, requires_grad=True)
    y, ld = ops.affine_coupling(e, e, e)
    assert y.shape == (0, 5) and ld.shape == (0,)
    (y.sum() + ld.sum()).backward()
    assert e.grad.shape == (0, 5)


def test_bad_input():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="clamp_mode"):
        ops.affine_coupling(x, x, x, clamp_mode="sigmoid")
    with pytest.raises(ValueError, match="s_raw must match x"):
        ops.affine_coupling(x, torch.randn(2, 4), x)
    with pytest.raises(ValueError, match="clamp must be positive"):
        ops.affine_coupling(x, x, x, clamp=0.0)


@pytest.mark.parametrize("backend,reverse", product(backends, [False, True]))
def test_grad_through_one_output_only(backend, reverse, gen, use_backend):
    # Only y, or only logdet, feeds the loss: the other output's gradient is absent, not zero-filled.
    use_backend(backend)
    x, s, t = _inputs(3, 5, torch.float64, "cpu", gen, requires_grad=True)
    refs = [a.detach().clone().requires_grad_() for a in (x, s, t)]
    for pick in (0, 1):
        out = ops.affine_coupling(x, s, t, 1.0, "atan", reverse)[pick].sum()
        ref = reference.affine_coupling(*refs, 1.0, "atan", reverse)[pick].sum()
        for a, b in zip(torch.autograd.grad(out, (x, s, t), allow_unused=True),
                        torch.autograd.grad(ref, refs, allow_unused=True)):
            a = torch.zeros_like(x) if a is None else a
            b = torch.zeros_like(x) if b is None else b
            assert rel_err(a, b) < 1e-12
