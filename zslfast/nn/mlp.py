"""Multi-layer perceptrons shared by the methods (GRW's embedder D, CVC's classifier generator, and
SC-EGG's networks next)."""
from torch import nn

INITS = ("default", "xavier", "normal")


def init_linear(module, init="default", std=0.02):
    """Re-initialise every nn.Linear in ``module``: ``xavier`` (xavier-normal weights, zero biases),
    ``normal`` (N(0, std²) weights, zero biases) or ``default`` (PyTorch's own, left as built)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "default":
        return module
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if init == "xavier":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
    return module


class MLP(nn.Module):
    """Linear layers ``dims[0] → dims[1] → … → dims[-1]`` with ``act`` between them and ``out_act``
    after the last (both ReLU by default, as GRW's D(a) and CVC's w(a)).

    Args:
        dims: layer widths, input first.
        init: see :func:`init_linear`; ``std`` for ``normal``.
    """

    def __init__(self, dims, act=nn.ReLU, out_act=nn.ReLU, init="default", std=0.02):
        super().__init__()
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            last = i == len(dims) - 2
            if (out_act if last else act) is not None:
                layers.append((out_act if last else act)())
        self.net = nn.Sequential(*layers)
        init_linear(self, init, std)

    def forward(self, x):
        return self.net(x)
