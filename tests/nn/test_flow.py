import pytest
import torch
from torch import nn

from zslfast import ops
from zslfast.nn import ConditionalFlow, ConditionalGLOWCoupling
from zslfast.testing import backends, devices, product


def _flow(dim=12, cond=5, blocks=3, hidden=16, clamp=1.0, mode="atan", dtype=torch.float64, device="cpu"):
    torch.manual_seed(0)
    f = ConditionalFlow(dim, cond, blocks, hidden, clamp, mode).to(device=device, dtype=dtype)
    for p in f.parameters():  # visible but well-conditioned transforms
        nn.init.normal_(p, std=0.3)
    return f


@pytest.mark.parametrize("backend,device,mode", product(backends, devices, ["atan", "atan_scaled", "tanh"]))
def test_inverse_and_logdets(backend, device, mode, use_backend):
    use_backend(backend, device)
    f = _flow(mode=mode, clamp=1.5, device=device)
    x, c = torch.randn(7, 12, dtype=torch.float64, device=device), torch.randn(7, 5, dtype=torch.float64,
                                                                              device=device)
    z, ld = f(x, c)
    x_back, ld_rev = f(z, c, rev=True)
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ld + ld_rev, torch.zeros_like(ld), rtol=0, atol=1e-10)
    assert ld.abs().max() > 1e-3  # the test is not vacuous: the flow is not the identity


@pytest.mark.parametrize("backend", backends)
def test_logdet_matches_jacobian(backend, use_backend):
    use_backend(backend)
    f = _flow(dim=6, cond=3, blocks=2, hidden=8)
    x, c = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    _, ld = f(x, c)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: f(v[None], c[i:i + 1])[0][0], x[i])
        torch.testing.assert_close(ld[i], torch.linalg.slogdet(jac)[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", backends)
def test_condition_rows_with_index_equal_per_sample_condition(backend, use_backend):
    use_backend(backend)
    f = _flow()
    classes = torch.randn(4, 5, dtype=torch.float64)
    idx = torch.tensor([0, 3, 3, 1, 0, 2, 2])
    x = torch.randn(7, 12, dtype=torch.float64)
    z1, l1 = f(x, classes[idx])
    z2, l2 = f(x, classes, cond_index=idx)
    torch.testing.assert_close(z1, z2)
    torch.testing.assert_close(l1, l2)
    # one row broadcasts to the whole batch (sampling a single class)
    z3, _ = f(x, classes[1:2], rev=True)
    z4, _ = f(x, classes[1:2].expand(7, 5), rev=True)
    torch.testing.assert_close(z3, z4)


def test_bad_shapes():
    f = _flow()
    with pytest.raises(ValueError, match=r"flow input must be \[B, 12\]"):
        f(torch.randn(2, 11, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"flow condition must be \[rows, 5\]"):
        f(torch.randn(2, 12, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty half"):
        ConditionalGLOWCoupling(4, 2, 8, split_len=4)


@pytest.fixture
def freia():
    """FrEIA (the [test] extra), for the parity tests only: its absence skips them, not the module."""
    return pytest.importorskip("FrEIA", reason="FrEIA (test-only dependency) not installed")


def freia_flow_like(ours, slope=0.2):
    """FrEIA SequenceINN of GLOWCouplingBlocks with our weights copied in."""
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    hidden = ours.blocks[0].subnet1.lin_x.out_features

    def subnet(c_in, c_out):
        return nn.Sequential(nn.Linear(c_in, hidden), nn.LeakyReLU(slope), nn.Linear(hidden, c_out))

    b0 = ours.blocks[0]
    inn = Ff.SequenceINN(ours.dim)
    for _ in ours.blocks:
        inn.append(Fm.GLOWCouplingBlock, cond=0, cond_shape=(ours.cond_dim,), subnet_constructor=subnet,
                   clamp=b0.clamp, clamp_activation="ATAN")
    inn = inn.to(dtype=next(ours.parameters()).dtype)
    with torch.no_grad():
        for mine, theirs in zip(ours.blocks, inn.module_list):
            for name in ("subnet1", "subnet2"):
                m, t = getattr(mine, name), getattr(theirs, name)
                t[0].weight.copy_(torch.cat([m.lin_x.weight, m.lin_c.weight], 1))
                t[0].bias.copy_(m.lin_c.bias)
                t[2].weight.copy_(torch.cat([m.out_s.weight, m.out_t.weight]))
                t[2].bias.copy_(torch.cat([m.out_s.bias, m.out_t.bias]))
    return inn


@pytest.mark.parametrize("backend,dtype", product(backends, [torch.float32, torch.float64]))
def test_parity_with_freia_glow_coupling(backend, dtype, use_backend, freia):
    use_backend(backend)
    ours = _flow(dim=10, cond=4, blocks=3, hidden=12, clamp=1.0, dtype=dtype)
    theirs = freia_flow_like(ours)
    x, c = torch.randn(6, 10, dtype=dtype), torch.randn(6, 4, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    z, ld = ours(x, c)
    z_f, ld_f = theirs(x, c=[c])
    torch.testing.assert_close(z, z_f, rtol=tol, atol=tol)
    torch.testing.assert_close(ld, ld_f, rtol=tol, atol=tol)
    xr, ldr = ours(z, c, rev=True)
    xr_f, ldr_f = theirs(z, c=[c], rev=True)
    torch.testing.assert_close(xr, xr_f, rtol=tol, atol=tol)
    torch.testing.assert_close(ldr, ldr_f, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", backends)
def test_gradient_parity_with_freia(backend, use_backend, freia):
    use_backend(backend)
    ours = _flow(dim=10, cond=4, blocks=2, hidden=12)
    theirs = freia_flow_like(ours)
    x, c = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)

    def nll(z, ld):  # GSMFlow's loss
        return (z ** 2).mean() / 2 - ld.mean() / z.shape[1]

    nll(*ours(x, c)).backward()
    nll(*theirs(x, c=[c])).backward()
    for mine, their in zip(ours.blocks, theirs.module_list):
        for name in ("subnet1", "subnet2"):
            m, t = getattr(mine, name), getattr(their, name)
            torch.testing.assert_close(torch.cat([m.lin_x.weight.grad, m.lin_c.weight.grad], 1), t[0].weight.grad)
            torch.testing.assert_close(m.lin_c.bias.grad, t[0].bias.grad)
            torch.testing.assert_close(torch.cat([m.out_s.weight.grad, m.out_t.weight.grad]), t[2].weight.grad)
