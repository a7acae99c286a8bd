"""The compiled operators as PyTorch sees them: schemas, fake kernels, autograd registration
(torch.library.opcheck) and torch.compile(fullgraph=True)."""
import pytest
import torch

from zslfast import ops
from zslfast.testing import devices, ext_built_for, product, randn, rel_err

pytestmark = pytest.mark.skipif(not ext_built_for("cpu"), reason="compiled extension not available")


def _samples(device, gen):
    def r(*shape, grad=True):
        return randn(*shape, dtype=torch.float64, device=device, generator=gen, requires_grad=grad)

    zo = torch.ops.zslfast
    return [
        *[(zo.pairwise_distance, (r(5, 3), r(4, 3), m)) for m in ("sqeuclidean", "euclidean", "cosine", "dot")],
        *[(zo.nearest_prototype, (r(9, 3, grad=False), r(4, 3, grad=False), m, 4)) for m in ("cosine", "dot")],
        *[(zo.transition_matrix, (r(5, 3), r(4, 3), 0.5, m, False)) for m in ("cosine", "sqeuclidean")],
        (zo.transition_matrix, (r(5, 3), r(5, 3), 0.5, "cosine", True)),
        *[(zo.self_transition_matrix, (r(6, 3), 0.5, m, ex)) for m in ("cosine", "sqeuclidean") for ex in (False, True)],
        *[(zo.random_walk_landing, (r(3, 4), r(6, 4), s, 0.7, m)) for s in (0, 2) for m in ("cosine", "sqeuclidean")],
        *[(zo.affine_coupling, (r(4, 6), r(4, 6), r(4, 6), 1.0, mode, rev, True))
          for mode in ("atan", "atan_scaled", "tanh", "none") for rev in (False, True)],
        (zo.affine_coupling, (r(4, 6, grad=False), r(4, 6, grad=False), r(4, 6, grad=False), 1.0, "atan", False,
                              False)),
        *[(zo.attention_pool, (r(3, 5, 7, grad=fg), r(4, 5), norm, red))
          for red in ("mean", "none") for norm in (True, False) for fg in (True, False)],
    ]


@pytest.mark.parametrize("device", devices)
def test_opcheck(device, gen):
    if not ext_built_for(device):
        pytest.skip(f"extension not built for {device}")
    for op, args in _samples(device, gen):
        torch.library.opcheck(op, args)


# torch.compile: each case pays a cold Inductor C++ compile; the default tier compiles attention_pool
# (reduce=mean) forward and backward, the slow tier every op and variant.
@pytest.mark.slow
@pytest.mark.parametrize("device,reverse", product(devices, [False, True]))
def test_compile_affine_coupling(device, reverse, gen, use_backend):
    use_backend("ext", device)
    x, s, t = (randn(8, 16, dtype=torch.float32, device=device, generator=gen, requires_grad=True) for _ in range(3))

    def f(x, s, t):
        y, logdet = ops.affine_coupling(x, s, t, 1.0, "atan", reverse)
        return (y * y).sum() + logdet.sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    expected, got = f(x, s, t), compiled(x, s, t)
    assert rel_err(got, expected) < 1e-5
    g_expected = torch.autograd.grad(expected, (x, s, t))
    g_got = torch.autograd.grad(got, (x, s, t))
    for a, b in zip(g_got, g_expected):
        assert rel_err(a, b) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("device,metric", product(devices, ["cosine", "sqeuclidean"]))
def test_compile_transition_matrix(device, metric, gen, use_backend):
    use_backend("ext", device)
    x = randn(12, 6, dtype=torch.float32, device=device, generator=gen, requires_grad=True)

    def f(x):
        P = ops.transition_matrix(x, x, 0.5, metric, True)
        return (P * P).sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    expected, got = f(x), compiled(x)
    assert rel_err(got, expected) < 1e-5
    assert rel_err(torch.autograd.grad(got, x)[0], torch.autograd.grad(expected, x)[0]) < 1e-5


@pytest.mark.parametrize("device,reduce", [(d, r) if r == "mean" else pytest.param(d, r, marks=pytest.mark.slow)
                                           for d, r in product(devices, ["mean", "none"])])
def test_compile_attention_pool(device, reduce, gen, use_backend):
    use_backend("ext", device)
    f = randn(4, 16, 9, dtype=torch.float32, device=device, generator=gen).relu()
    q = randn(5, 16, dtype=torch.float32, device=device, generator=gen, requires_grad=True)

    def fn(f, q):
        pooled, attn = ops.attention_pool(f, q, True, reduce)
        return (pooled * pooled).sum() + (attn * attn).sum()

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    expected, got = fn(f, q), compiled(f, q)
    assert rel_err(got, expected) < 1e-5
    assert rel_err(torch.autograd.grad(got, q)[0], torch.autograd.grad(expected, q)[0]) < 1e-5
