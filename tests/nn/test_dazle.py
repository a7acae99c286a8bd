"""SC-EGG's stage-1 attention network: uniform attention at init, the dense feature as the mean of H,
and a short training run that localises the planted attributes and transfers to unseen classes."""
import torch
import torch.nn.functional as F

from zslfast.data.synthetic_regions import make_synthetic_regions
from zslfast.nn.dazle import AttributeAttentionNet, MinMaxScaler


def _data():
    return make_synthetic_regions(seed=0, num_classes=20, num_unseen=5, attribute_dim=32, images_per_class=20,
                                  channels=64, grid=(7, 7))


def test_uniform_at_init_and_dense_is_the_attribute_mean():
    d = _data()
    x = d.features.read(torch.arange(10))
    net = AttributeAttentionNet(64, d.attributes, d.w2v, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(net.V.detach().norm(dim=1), torch.ones(32)) and float(net.W2.detach().abs().max()) == 0
    local, glob, attn = net(x)
    assert local.shape == glob.shape == (10, 20) and attn.shape == (10, 32, 49)
    assert torch.allclose(attn, torch.full_like(attn, 1 / 49))
    g = net.dense(x)
    assert torch.allclose(g, F.normalize(x, dim=1).mean(2), atol=1e-6)
    # a single image keeps its batch dimension (the original's .squeeze() would drop it)
    assert net(x[:1])[1].shape == (1, 20)


def test_short_stage1_run_localises_attributes_and_transfers_to_unseen_classes():
    torch.manual_seed(0)
    d = _data()
    x, tv, seen, unseen = d.features.read(), d.splits["trainval"], d.seen_classes, d.unseen_classes
    g = torch.Generator().manual_seed(0)
    net = AttributeAttentionNet(64, d.attributes, d.w2v, generator=g)
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3, weight_decay=1e-4, momentum=0.9)
    losses = []
    for _ in range(100):
        idx = tv[torch.randint(0, tv.numel(), (64,), generator=g)]
        loss = net.loss(x[idx], d.labels[idx], seen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    fp = d.footprints["region"].long()
    with torch.no_grad():
        _, _, attn = net(x)
        mass = attn.gather(2, fp.clamp_min(0)[..., None])[..., 0][fp >= 0].mean()
        test = d.splits["test_unseen"]
        local, _, _ = net(x[test])
    assert float(mass) >= 3 / 49, float(mass) * 49  # at least 3× the uniform share of one region
    acc = float((unseen[local[:, unseen].argmax(1)] == d.labels[test]).float().mean())
    assert acc > 2 / unseen.numel(), acc  # ZSL from the local attribute scores: over 2× chance


def test_min_max_scaler_guards_constant_channels():
    s = MinMaxScaler(3)
    x = torch.tensor([[0.0, 1.0, 5.0], [2.0, 3.0, 5.0]])
    assert torch.equal(s(x), x)  # identity before fit
    s.fit(x)
    assert torch.equal(s(x), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))


def test_dense_pass_matches_the_network_and_cached_stage2_equals_recomputed():
    """The cache (one pass over the maps) gives exactly the dense features and teacher logits the
    original recomputes from the region maps for every batch; a few float64 stage-2 steps on the
    cache and on the recomputed formulation give the same losses and weights."""
    from zslfast.nn.dazle import DistillationHead, dense_pass

    d = make_synthetic_regions(seed=1, num_classes=8, num_unseen=2, attribute_dim=12, images_per_class=6,
                               channels=16, grid=(3, 3))
    g = torch.Generator().manual_seed(0)
    net = AttributeAttentionNet(16, d.attributes, d.w2v, generator=g).double()
    torch.nn.init.normal_(net.W2, 0, 0.3, generator=g)  # non-uniform attention, as after stage 1
    x64 = d.features.read().double()
    feats = d.features
    dense, teacher = dense_pass(net, _Float64(feats), block=7)
    with torch.no_grad():
        local, _, _ = net(x64)
        assert torch.allclose(dense, net.dense(x64), atol=1e-12) and torch.allclose(teacher, local, atol=1e-12)
    net.scaler.fit(dense[d.splits["trainval"]])
    heads = [DistillationHead(16, 8, hidden=32).double() for _ in range(2)]
    heads[1].load_state_dict(heads[0].state_dict())
    opts = [torch.optim.RMSprop(h.parameters(), lr=1e-3, weight_decay=1e-4, momentum=0.9) for h in heads]
    tv = d.splits["trainval"]
    for step in range(4):
        idx = tv[torch.randint(0, tv.numel(), (10,), generator=g)]
        cached = torch.nn.functional.mse_loss(heads[0](net.scaler(dense[idx])), teacher[idx])
        with torch.no_grad():  # the original: attention recomputed from the maps, teacher forward again
            target, _, _ = net(x64[idx])
            x = net.scaler(net.dense(x64[idx]))
        recomputed = torch.nn.functional.mse_loss(heads[1](x), target)
        assert abs(float((cached - recomputed).detach())) < 1e-12
        for loss, opt in zip((cached, recomputed), opts):
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(heads[0].parameters(), heads[1].parameters()):
        assert torch.allclose(a, b, atol=1e-12)


class _Float64:
    """A RegionFeatures view whose blocks come out as float64 (for the float64 comparison)."""

    def __init__(self, feats):
        self.feats = feats

    def blocks(self, block):
        for pos, x in self.feats.blocks(block):
            yield pos, x.double()
