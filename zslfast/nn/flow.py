"""Conditional normalising flows built on :func:`zslfast.ops.affine_coupling`.

:class:`ConditionalGLOWCoupling` is FrEIA's ``GLOWCouplingBlock`` with a condition (the block GSMFlow
uses): the input splits into halves x1 | x2; subnet2([x2, c]) predicts (s2, t2) for x1 and
subnet1([y1, c]) predicts (s1, t1) for x2; both halves are transformed and the log-det is Σ s1 + Σ s2.
The return contract follows FrEIA: ``(output, log_det)``, with the log-det negated for ``rev=True``.

What differs from FrEIA, for speed (the values are the same; a test checks parity with FrEIA):

* each subnet's first layer is split into a feature part and a condition part, and the condition
  part is computed **once per distinct condition**: pass ``c`` with one row per class and
  ``cond_index`` mapping samples to rows (training: the classes in the batch; sampling: one class);
* the subnet's output layer is two heads (the s-rows and the t-rows of FrEIA's one output layer),
  so s and t come out contiguous for the fused coupling kernel (slicing one weight instead made
  autograd zero-fill a full-size gradient buffer per slice: 25% of a training step);
* the clamp → exp → scale-and-shift → log-det chain is one fused operator.
"""
import torch
from torch import nn
from torch.nn import functional as F

from zslfast import ops


class ConditionedMLP(nn.Module):
    """Linear([x | c] → hidden) → LeakyReLU → Linear(hidden → 2·half), the first layer split in a
    feature part (``lin_x``) and a condition part (``lin_c``) so the latter can be computed once per
    distinct condition, the last in an s-head (``out_s``) and a t-head (``out_t``). Concatenating
    the parts gives the parameters of FrEIA's usual ``Sequential`` subnet."""

    def __init__(self, in_dim, cond_dim, hidden, half, slope=0.2):
        super().__init__()
        self.lin_x = nn.Linear(in_dim, hidden, bias=cond_dim == 0)
        self.lin_c = nn.Linear(cond_dim, hidden) if cond_dim else None
        self.out_s = nn.Linear(hidden, half)
        self.out_t = nn.Linear(hidden, half)
        self.slope = slope

    def project_condition(self, c):
        """The condition's contribution to the first layer (bias included): [rows of c, hidden]."""
        return None if self.lin_c is None else self.lin_c(c)

    def scale_shift(self, x, cond_proj, cond_index=None):
        """(s_raw, t), each [B, half] and contiguous."""
        h = self.lin_x(x)
        if cond_proj is not None:
            # index_select, not cond_proj[cond_index]: its backward (index_add_) sums in a fixed order
            # on the CPU, while indexing's backward (index_put_ with accumulate) does not, which made
            # multi-threaded runs differ from one another.
            h = h + (cond_proj if cond_index is None else cond_proj.index_select(0, cond_index))
        h = F.leaky_relu(h, self.slope)
        return self.out_s(h), self.out_t(h)


class ConditionalGLOWCoupling(nn.Module):
    """Two-sided conditional affine coupling (GLOW), see the module docstring.

    Args:
        dim: feature size. cond_dim: condition size (0 for none).
        hidden: subnet width. clamp, clamp_mode: soft clamp of the log-scales (see
            :func:`zslfast.ops.affine_coupling`; GSMFlow: 1.0, "atan").
        split_len: size of the first half, as a fraction (FrEIA's rounding) or an int.
        slope: LeakyReLU slope inside the subnets.
    """

    def __init__(self, dim, cond_dim, hidden, clamp=1.0, clamp_mode="atan", split_len=0.5, slope=0.2):
        super().__init__()
        self.len1 = round(dim * split_len) if isinstance(split_len, float) else int(split_len)
        self.len2 = dim - self.len1
        if not (0 < self.len1 < dim):
            raise ValueError(f"split_len {split_len} leaves an empty half of {dim} dims")
        self.dim, self.cond_dim, self.clamp, self.clamp_mode = dim, cond_dim, clamp, clamp_mode
        self.subnet1 = ConditionedMLP(self.len1, cond_dim, hidden, self.len2, slope)  # y1 -> (s1, t1) for x2
        self.subnet2 = ConditionedMLP(self.len2, cond_dim, hidden, self.len1, slope)  # x2 -> (s2, t2) for x1

    def project_condition(self, c):
        return self.subnet1.project_condition(c), self.subnet2.project_condition(c)

    def forward(self, x, c=None, rev=False, cond_proj=None, cond_index=None):
        """(output, log_det [B]); ``cond_proj`` (from :meth:`project_condition`) replaces ``c``."""
        p1, p2 = cond_proj if cond_proj is not None else self.project_condition(c)
        a, b = x[:, :self.len1], x[:, self.len1:]
        k = (self.clamp, self.clamp_mode)
        if not rev:
            s2, t2 = self.subnet2.scale_shift(b, p2, cond_index)
            y1, j1 = ops.affine_coupling(a, s2, t2, *k)
            s1, t1 = self.subnet1.scale_shift(y1, p1, cond_index)
            y2, j2 = ops.affine_coupling(b, s1, t1, *k)
            return torch.cat([y1, y2], 1), j1 + j2
        s1, t1 = self.subnet1.scale_shift(a, p1, cond_index)
        x2, j2 = ops.affine_coupling(b, s1, t1, *k, reverse=True)
        s2, t2 = self.subnet2.scale_shift(x2, p2, cond_index)
        x1, j1 = ops.affine_coupling(a, s2, t2, *k, reverse=True)
        return torch.cat([x1, x2], 1), j1 + j2


class ConditionalFlow(nn.Module):
    """A sequence of :class:`ConditionalGLOWCoupling` blocks sharing one condition.

    ``forward(x, c)`` maps data to latent, returning ``(z, log_det)``; ``forward(z, c, rev=True)``
    maps back (blocks in reverse order), returning ``(x, -log_det)``. ``c`` is either per sample
    ([B, cond_dim]) or per distinct condition ([R, cond_dim]) with ``cond_index`` [B] giving each
    sample's row; a single row ([1, cond_dim]) is broadcast to the whole batch. No permutations
    between blocks (as GSMFlow): every block pairs the same two halves.

    Args:
        dim, cond_dim, num_blocks, hidden, clamp, clamp_mode, split_len, slope: see the block.
        init_std: if given, every parameter (weights and biases) is drawn from N(0, init_std²), as
            GSMFlow does with 0.01 (the flow starts close to the identity).
    """

    def __init__(self, dim, cond_dim, num_blocks, hidden, clamp=1.0, clamp_mode="atan", split_len=0.5,
                 slope=0.2, init_std=None):
        super().__init__()
        self.dim, self.cond_dim = dim, cond_dim
        self.blocks = nn.ModuleList([ConditionalGLOWCoupling(dim, cond_dim, hidden, clamp, clamp_mode, split_len,
                                                             slope) for _ in range(num_blocks)])
        if init_std is not None:
            for p in self.parameters():
                nn.init.normal_(p, std=init_std)

    def forward(self, x, c=None, rev=False, cond_index=None):
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"flow input must be [B, {self.dim}], got {tuple(x.shape)}")
        if self.cond_dim and (c is None or c.dim() != 2 or c.shape[1] != self.cond_dim):
            raise ValueError(f"flow condition must be [rows, {self.cond_dim}], got "
                             f"{None if c is None else tuple(c.shape)}")
        logdet = x.new_zeros(x.shape[0])
        blocks = list(self.blocks) if not rev else list(reversed(self.blocks))
        for block in blocks:
            x, j = block(x, rev=rev, cond_proj=block.project_condition(c), cond_index=cond_index)
            logdet = logdet + j
        return x, logdet
