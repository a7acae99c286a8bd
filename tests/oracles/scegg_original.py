"""SC-EGG's original formulation of stages 2 and 3 (spec §1.4-§1.5): every batch's dense features
(and, in stage 2, the teacher's logits) recomputed from the region maps with the frozen stage-1
network, as the released code does. A test oracle for the cached pipeline of
:mod:`zslfast.models.scegg` and the baseline of ``benchmarks/bench_train.py --method scegg``. Not
shipped in the package: nothing at run time uses it."""
import torch
import torch.nn.functional as F

from zslfast import ops


class RecomputedDense:
    """Stands in for the cached trainval features ``x_all`` of a stage-3 step: ``self[idx]`` gathers
    the maps of images ``idx`` and recomputes Scaler(g) with the frozen net. The attention is formed
    the original's way: the attribute features H [B, A, C] in full, then their mean over attributes
    (twice the FLOPs of the fused ``mean`` mode)."""

    def __init__(self, net, maps, rows=None):
        self.net, self.maps, self.rows = net, maps, rows

    def __getitem__(self, idx):
        rows = idx if self.rows is None else self.rows[idx]
        with torch.no_grad():
            h, _ = ops.attention_pool(self.maps[rows], self.net.queries(), True, "none")
            return self.net.scaler(h.mean(1))

    @property
    def shape(self):
        n = self.maps.shape[0] if self.rows is None else self.rows.numel()
        return (n, self.maps.shape[1])


def original_stage2_loss(net, head, maps):
    """The released stage-2 loss of one batch of region maps: the attention once for the student's
    input Scaler(g) and once more inside the teacher's full forward (its dead global branch
    included), then MSE to the teacher's local logits over all classes."""
    with torch.no_grad():
        h, _ = ops.attention_pool(maps, net.queries(), True, "none")
        x = net.scaler(h.mean(1))
        target, _, _ = net(maps)
    return F.mse_loss(head(x), target)
