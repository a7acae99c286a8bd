"""The DAZLE-style attribute attention network: SC-EGG's stage 1 ("LEN", its ``DAZLE`` class).

From ``../shared/reference/sc_egg_spec.md`` §1.2–§1.3. For region features F [B, C, R] and attribute
word vectors w2v [A, d]:

- V [A, d] (trainable, starts as the row-normalised word vectors), W1, W2 [d, C] with W1 ~ N(0, 1) and
  W2 = 0, so attention starts exactly uniform;
- attention queries Q = V·W2; α = softmax over regions of Q·F̂_b (F̂: regions L2-normalised) and the
  attribute features H = α·F̂ᵀ [B, A, C], both from :func:`zslfast.ops.attention_pool`;
- local attribute scores S_p = Σ_c (V·W1) ⊙ H [B, A] and local class logits S_p·ãᵀ [B, K] (ã the
  row-normalised class attributes; no bias, no calibration);
- the global branch: an MLP over the attribute axis of H (A → ⌊A/2⌋ → 1, LeakyReLU(0.01)) composes one
  C-vector per image, a per-channel min-max scaler (identity in stage 1) and a linear classifier over
  all K classes;
- :meth:`dense` is the runtime "compression": g = F̂·mean_i α, the attribute mean of H, computed by the
  operator's ``mean`` mode without forming H. Training composes with the MLP, runtime averages: the
  original's mismatch, kept (spec §1.8 item 2).

SC-EGG's W3 only feeds an output nothing uses, so it is not built (it never receives a gradient).

:func:`dense_pass` is the one pass over the region maps that stages 2 and 3 need: for every image the
dense feature g and the frozen stage-1 net's local class logits (the distillation targets), read block
by block from a :class:`zslfast.data.RegionFeatures`. After it, nothing touches region maps again (the
original recomputes the attention from the maps for every batch: twice per batch in stage 2).
"""
import torch
import torch.nn.functional as F
from torch import nn

from zslfast import ops
from zslfast.distributed import sharded


class MinMaxScaler(nn.Module):
    """(x − min)/(max − min) per channel, with statistics that are not trained; the identity until
    :meth:`fit` is called. Channels with max = min are left unscaled (the original divides by zero)."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("lo", torch.zeros(channels))
        self.register_buffer("span", torch.ones(channels))

    def fit(self, x):
        lo, hi = x.min(0).values, x.max(0).values
        self.lo.copy_(lo)
        self.span.copy_(torch.where(hi > lo, hi - lo, torch.ones_like(hi)))
        return self

    def forward(self, x):
        return (x - self.lo) / self.span


class AttributeAttentionNet(nn.Module):
    """Stage 1 of SC-EGG (module docstring). ``attributes`` [K, A] (all classes), ``w2v`` [A, d]."""

    def __init__(self, channels, attributes, w2v, generator=None):
        super().__init__()
        a, d = w2v.shape
        k = attributes.shape[0]
        self.V = nn.Parameter(F.normalize(w2v.to(torch.get_default_dtype()), dim=1).clone())
        self.W1 = nn.Parameter(torch.randn(d, channels, generator=generator))
        self.W2 = nn.Parameter(torch.zeros(d, channels))
        self.register_buffer("class_att", F.normalize(attributes.to(torch.get_default_dtype()), dim=1))
        self.mlp_compose = nn.Sequential(nn.Linear(a, a // 2), nn.LeakyReLU(0.01), nn.Linear(a // 2, 1))
        self.scaler = MinMaxScaler(channels)
        self.compose_cls = nn.Linear(channels, k)

    def queries(self):
        return self.V @ self.W2

    def forward(self, features):
        """(local class logits [B, K], global class logits [B, K], attention [B, A, R])."""
        h, attn = ops.attention_pool(features, self.queries(), True, "none")
        s_p = (h * (self.V @ self.W1)).sum(-1)
        local = s_p @ self.class_att.T
        composed = self.mlp_compose(h.transpose(1, 2)).squeeze(2)  # [B, C]: explicit dim, safe for B = 1
        return local, self.compose_cls(self.scaler(composed)), attn

    def dense(self, features):
        """SC-EGG's dense feature g [B, C] (attribute-mean attention pooling), unscaled."""
        return ops.attention_pool(features, self.queries(), True, "mean")[0]

    def loss(self, features, labels, seen):
        """CE over the seen classes of the local and of the global logits (weights 1 and 1)."""
        local, glob, _ = self(features)
        return self.loss_of(local, glob, labels, seen)

    @staticmethod
    def loss_of(local, glob, labels, seen):
        """:meth:`loss` from the network's local and global class logits of a batch."""
        target = torch.searchsorted(seen, labels)
        return F.cross_entropy(local[:, seen], target) + F.cross_entropy(glob[:, seen], target)


class DistillationHead(nn.Module):
    """SC-EGG's stage-2 head ("TS"): C → hidden → K with LeakyReLU(0.01), default init; fitted by MSE to
    the frozen stage-1 net's local logits over all K classes (unseen classes scored through their
    attributes)."""

    def __init__(self, channels, num_classes, hidden=1024):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


@torch.no_grad()
def dense_pass(net, features, block=256):
    """(g [N, C], local logits [N, K]) of every image of ``features`` (a RegionFeatures or view), one
    attention pass per block: g is the attribute mean of the same H the logits come from."""
    gs, logits = [], []
    for _, x in features.blocks(block):
        h = attribute_features(net, x.to(net.V.device))
        logits.append(((h * (net.V @ net.W1)).sum(-1)) @ net.class_att.T)
        gs.append(h.mean(1))
    return torch.cat(gs), torch.cat(logits)


def attribute_features(net, maps):
    """The attribute features H [B, A, C] of region maps [B, C, R] (attention pooling per attribute);
    their mean over the attributes is SC-EGG's dense feature g, before scaling."""
    return ops.attention_pool(maps, net.queries(), True, "none")[0]


def attend_rows(net, maps, idx):
    """(local, global) logits of the images ``idx`` of ``maps``, a per-row composite: in a process
    group each rank reads and attends over its own rows' region maps and the logits are gathered
    (``net``: the network as it runs on this rank's rows)."""
    return sharded(lambda i: net(maps.read(i))[:2], idx)
