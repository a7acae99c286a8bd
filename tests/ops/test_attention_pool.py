"""attention_pool: the extension against the reference and an independent oracle, gradients
(queries always, features when asked), gradcheck, invariants (uniform attention at zero queries, the
mean mode equals the mean of H, localisation with oracle queries) and input errors."""
import pytest
import torch

from zslfast import ops
from zslfast.ops import reference
from zslfast.testing import REL_TOL, backends, devices, dtypes, product, randn, rel_err

from . import oracles

REDUCE = ["mean", "none"]


def _inputs(b, c, r, a, dtype, device, gen, grad_features=True):
    # Non-negative like ReLU feature maps, plus one all-zero region (the eps branch of the norm).
    f = randn(b, c, r, dtype=dtype, device=device, generator=gen).relu()
    f[0, :, 1] = 0
    q = randn(a, c, dtype=dtype, device=device, generator=gen)
    return f.requires_grad_(grad_features), q.requires_grad_()


@pytest.mark.parametrize("dtype,device,reduce,normalize", product(dtypes, devices, REDUCE, [True, False]))
def test_extension_matches_reference_values_and_grads(dtype, device, reduce, normalize, gen, use_backend):
    use_backend("ext", device)
    f, q = _inputs(5, 19, 13, 7, dtype, device, gen)  # odd sizes: vector tails on every axis
    pooled, attn = ops.attention_pool(f, q, normalize, reduce)
    rf, rq = f.detach().clone().requires_grad_(), q.detach().clone().requires_grad_()
    rp, ra = reference.attention_pool(rf, rq, normalize, reduce)
    assert pooled.shape == rp.shape and attn.shape == (5, 7, 13)
    assert rel_err(pooled, rp) < REL_TOL[dtype] and rel_err(attn, ra) < REL_TOL[dtype]
    gp = randn(*pooled.shape, dtype=dtype, device=device, generator=gen)
    ga = randn(*attn.shape, dtype=dtype, device=device, generator=gen)
    ours = torch.autograd.grad((pooled, attn), (f, q), (gp, ga))
    theirs = torch.autograd.grad((rp, ra), (rf, rq), (gp, ga))
    # The zero region's feature gradient is scaled by 1/eps = 1e12: compare the others.
    keep = torch.ones_like(f, dtype=torch.bool)
    keep[0, :, 1] = False
    assert rel_err(ours[0][keep], theirs[0][keep]) < 10 * REL_TOL[dtype]
    assert rel_err(ours[0][~keep], theirs[0][~keep]) < 10 * REL_TOL[dtype]
    assert rel_err(ours[1], theirs[1]) < 10 * REL_TOL[dtype]


@pytest.mark.parametrize("backend,dtype,device,reduce,normalize",
                         product(backends, dtypes, devices, REDUCE, [True, False]))
def test_against_the_loop_oracle(backend, dtype, device, reduce, normalize, gen, use_backend):
    use_backend(backend, device)
    f, q = _inputs(4, 11, 9, 5, dtype, device, gen)
    pooled, attn = ops.attention_pool(f, q, normalize, reduce)
    ep, ea = oracles.attention(f.detach(), q.detach(), normalize, reduce)
    assert rel_err(pooled.double(), ep) < 10 * REL_TOL[dtype]
    assert rel_err(attn.double(), ea) < 10 * REL_TOL[dtype]
    assert torch.allclose(attn.sum(-1).double(), torch.ones(4, 5, dtype=torch.float64, device=device),
                          atol=10 * REL_TOL[dtype])


@pytest.mark.parametrize("backend,device,reduce,normalize", product(backends, devices, REDUCE, [True, False]))
def test_gradcheck(backend, device, reduce, normalize, gen, use_backend):
    use_backend(backend, device)
    f = randn(3, 5, 6, dtype=torch.float64, device=device, generator=gen).requires_grad_()
    q = randn(4, 5, dtype=torch.float64, device=device, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ops.attention_pool(a, b, normalize, reduce), (f, q))


@pytest.mark.parametrize("backend,device,reduce", product(backends, devices, REDUCE))
def test_one_output_at_a_time_and_queries_only(backend, device, reduce, gen, use_backend):
    """Gradient through pooled alone, attn alone, and with features that do not require grad (the
    SC-EGG case): the same query gradients as the float64 oracle."""
    use_backend(backend, device)
    f, q = _inputs(3, 8, 10, 4, torch.float64, device, gen, grad_features=False)
    pooled, attn = ops.attention_pool(f, q, True, reduce)
    qo = q.detach().clone().requires_grad_()
    ep, ea = oracles.attention(f, qo, True, reduce)
    for out, ref in ((pooled, ep), (attn, ea)):
        w = randn(*out.shape, dtype=torch.float64, device=device, generator=gen)
        (g,) = torch.autograd.grad((out * w).sum(), q, retain_graph=True)
        (ge,) = torch.autograd.grad((ref * w).sum(), qo, retain_graph=True)
        assert rel_err(g, ge) < 1e-10
    assert f.grad is None


@pytest.mark.parametrize("backend,device,reduce", product(backends, devices, REDUCE))
def test_features_only(backend, device, reduce, gen, use_backend):
    """Features that require grad and queries that do not (no caller does it today; a wrong flag
    index in the backward would silently drop the feature gradient): the float64 oracle's."""
    use_backend(backend, device)
    f, q = _inputs(3, 8, 10, 4, torch.float64, device, gen)
    q.requires_grad_(False)
    pooled, attn = ops.attention_pool(f, q, True, reduce)
    fo = f.detach().clone().requires_grad_()
    ep, ea = oracles.attention(fo, q, True, reduce)
    w = [randn(*t.shape, dtype=torch.float64, device=device, generator=gen) for t in (pooled, attn)]
    (g,) = torch.autograd.grad((pooled * w[0]).sum() + (attn * w[1]).sum(), f)
    (ge,) = torch.autograd.grad((ep * w[0]).sum() + (ea * w[1]).sum(), fo)
    assert rel_err(g, ge) < 1e-10 and q.grad is None


@pytest.mark.parametrize("backend,device", product(backends, devices))
def test_invariants(backend, device, gen, use_backend):
    use_backend(backend, device)
    f, q = _inputs(4, 6, 9, 5, torch.float64, device, gen, grad_features=False)
    # Zero queries: uniform attention, and g is the mean of the normalised regions.
    pooled, attn = ops.attention_pool(f, torch.zeros_like(q), True, "mean")
    assert torch.allclose(attn, torch.full_like(attn, 1 / 9), atol=1e-15)
    fh = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    assert torch.allclose(pooled, fh.mean(2), atol=1e-14)
    # The mean mode is the attribute mean of H.
    g, a1 = ops.attention_pool(f, q, True, "mean")
    h, a2 = ops.attention_pool(f, q, True, "none")
    assert torch.allclose(g, h.mean(1), atol=1e-14) and torch.equal(a1, a2)
    # A [B,C,H,W] map is its [B,C,H·W] view.
    g4, _ = ops.attention_pool(f.reshape(4, 6, 3, 3), q, True, "mean")
    assert torch.equal(g4, g)
    # Non-contiguous features give the same result.
    ft = f.transpose(1, 2).contiguous().transpose(1, 2)
    assert not ft.is_contiguous()
    assert torch.allclose(ops.attention_pool(ft, q, True, "mean")[0], g, atol=1e-15)


@pytest.mark.parametrize("backend", backends)
def test_oracle_queries_find_the_planted_region(backend, gen, use_backend):
    """Each attribute's prototype is planted in its own region of each image over random clutter; a
    query aligned with the prototype puts almost all its mass there, and its row of H recovers the
    prototype, while the global mean dilutes it by 1/R."""
    use_backend(backend)
    b, c, r, a = 6, 64, 16, 4
    protos = torch.nn.functional.normalize(torch.rand(a, c, generator=gen) * (torch.rand(a, c, generator=gen) < 0.2), dim=1)
    f = 0.05 * torch.rand(b, c, r, generator=gen)
    where = torch.stack([torch.randperm(r, generator=gen)[:a] for _ in range(b)])  # distinct regions
    for n in range(b):
        for i in range(a):
            f[n, :, where[n, i]] += protos[i]
    h, attn = ops.attention_pool(f, 40 * protos, True, "none")
    mass = attn.gather(2, where[:, :, None]).squeeze(2)
    assert float(mass.min()) > 0.9
    cos_h = torch.nn.functional.cosine_similarity(h, protos[None], dim=2)
    cos_gap = torch.nn.functional.cosine_similarity(f.mean(2)[:, None, :], protos[None], dim=2)
    assert float(cos_h.min()) > 0.95 and float(cos_gap.max()) < float(cos_h.min())


@pytest.mark.parametrize("backend", backends)
def test_input_errors(backend, use_backend):
    use_backend(backend)
    f, q = torch.rand(2, 4, 5), torch.rand(3, 4)
    cases = [
        ((f[0], q), "must be \\[B,C,R\\]"),
        ((f, q[:, :3]), "queries have 3 channels"),
        ((f, q.double()), "share dtype"),
        ((f, q[:0]), "at least one query"),
        ((f[:, :, :0], q), "at least one query and one region"),
        ((f.long(), q), "floating-point"),
    ]
    for args, msg in cases:
        with pytest.raises((ValueError, TypeError), match=msg):
            ops.attention_pool(*args)
    with pytest.raises(ValueError, match="reduce must be one of mean, none"):
        ops.attention_pool(f, q, reduce="sum")
