"""The stage runner (zslfast.engine.recipe) on hand-worked cases: what a declared stage trains, how
the engine steps its optimisers, and what a manual step's Optimizers do."""
import pytest
import torch
from torch import nn

from zslfast.engine import RunContext
from zslfast.engine.recipe import Nets, Stage, Transform, run_recipe, run_stage


class Scalar(nn.Module):
    """f(x) = w·x with one weight; ``twice`` is a row method."""

    row_methods = ("twice",)

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(w)))

    def forward(self, x, offset=0.0):
        return self.w * x + offset

    def twice(self, x):
        return 2 * self.w * x


class Batches:
    """``steps`` batches per epoch, all the same."""

    def __init__(self, batch, steps):
        self.batch, self.steps = batch, steps

    def epoch(self):
        return iter([self.batch] * self.steps)


def _ctx():
    return RunContext(progress=False)


def test_a_loss_stage_takes_the_optimizer_steps_by_hand():
    # loss = (w·x − y)² with x = 1, y = 3, w0 = 1: grad 2(w − 3). SGD lr 0.25: w ← w − 0.5(w − 3),
    # so w = 1 → 2 → 2.5 over two steps; with grad_clip 1 the first gradient (−4) is clipped to −1:
    # w = 1 → 1.25 → 1.5 (second gradient −3.5, clipped to −1).
    for clip, expected in ((None, [2.0, 2.5]), (1.0, [1.25, 1.5])):
        m = Scalar(1.0)
        opt = torch.optim.SGD(m.parameters(), lr=0.25)
        seen = []
        stage = Stage("s", {"m": m}, opt, Batches(torch.tensor(1.0), 1), epochs=2, grad_clip=clip,
                      loss=lambda x, nets: (nets.m(x) - 3.0) ** 2,
                      on_epoch_start=lambda epoch, nets: seen.append((epoch, nets.m.w.item())))
        history = run_stage(stage, _ctx())
        assert [w for _, w in seen] == [1.0, expected[0]]  # the hook sees the weights before each epoch
        assert m.w.item() == pytest.approx(expected[1])
        assert [r["loss"]["loss"] for r in history.records] == pytest.approx([4.0, (expected[0] - 3) ** 2])
        assert not m.training  # then="eval"


def test_a_manual_step_steps_only_the_named_optimizers_and_freezes_modules():
    a, b = Scalar(1.0), Scalar(2.0)
    opts = {"a": torch.optim.SGD(a.parameters(), lr=0.1), "b": torch.optim.SGD(b.parameters(), lr=0.1)}
    grads = {}

    def step(x, nets, opt):
        # loss = a·b·x (x = 1): ∂/∂a = b = 2, ∂/∂b = a = 1. Only "a" is stepped: a = 1 − 0.2 = 0.8.
        opt.step(nets.a(x) * nets.b(x), "a")
        with opt.frozen("a"):  # a takes no gradient in here: ∂/∂b of a·b = 0.8 → b = 2 − 0.08
            opt.step(nets.a(x) * nets.b(x), "b")
            grads["a"] = a.w.grad
        # zero=False keeps b's gradient (0.8) and adds the new one (a = 0.8 again): b −= 0.1·1.6
        opt.step(nets.a(x) * nets.b(x), "b", zero=False)
        return {}

    run_stage(Stage("m", {"a": a, "b": b}, opts, Batches(torch.tensor(1.0), 1), step=step, epochs=1, then="freeze"), _ctx())
    assert grads["a"] is None
    assert a.w.item() == pytest.approx(0.8)
    assert b.w.item() == pytest.approx(2.0 - 0.08 - 0.16)
    assert not a.w.requires_grad and not b.w.requires_grad  # then="freeze"


def test_row_parallel_calls_in_one_process_are_the_modules_own():
    m = Scalar(3.0)
    nets = Nets({"m": m})
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(nets.m(x, offset=1.0), m(x, offset=1.0))
    assert torch.equal(nets.m(x=x), m(x))          # keyword only: the whole call
    assert torch.equal(nets.m.twice(x), 2 * m(x))  # a declared row method
    assert nets.m.w is m.w                          # other attributes are the module's


def test_stage_declarations_are_checked():
    m = Scalar(1.0)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="reserved"):
        Stage("s", {"state": m}, opt, None, loss=lambda b, n: 0, epochs=1)
    with pytest.raises(ValueError, match="exactly one of loss= and step="):
        Stage("s", {"m": m}, opt, None, epochs=1)
    with pytest.raises(ValueError, match="exactly one of epochs= and iterations="):
        Stage("s", {"m": m}, opt, None, loss=lambda b, n: 0)


def test_a_recipe_receives_each_stage_history_and_transform_value():
    m = Scalar(0.0)

    def recipe():
        history = yield Stage("fit w", {"m": m}, torch.optim.SGD(m.parameters(), lr=0.5), Batches(torch.tensor(1.0), 3),
                              loss=lambda x, nets: (nets.m(x) - 1.0) ** 2, epochs=1)
        doubled = yield Transform("double", lambda: 2 * m.w.item())
        return len(history.records), doubled

    fit = run_recipe(recipe(), _ctx())
    # grad 2(w − 1), lr 0.5: w ← 1 after the first step and stays there
    assert fit.model == (1, 2.0)
    assert set(fit.timings) == {"fitw_s", "double_s"}
