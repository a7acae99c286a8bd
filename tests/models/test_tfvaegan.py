"""TF-VAEGAN's iteration (``zslfast.nn.vaegan.train_step`` with ``generator_batch="last"``, no guidance)
against the released formulation in plain PyTorch (``tests/oracles/gan_original.py``, the benchmark's
baseline: separate backward passes, autograd's double backward for the penalty, non-fused Adam), two
iterations in float64 with the same draws; the hand-written oracle of the specification checks the same
step in ``tests/models/test_scegg_oracle.py``."""
import copy

import pytest
import torch

from tests.oracles import gan_original
from zslfast.engine.recipe import Stage, stage_step
from zslfast.nn import vaegan

C, A, HIDDEN = 4, 3, 5
Q = {"hidden": HIDDEN, "critic_iters": 2, "feedback_loops": 2, "lr": 0.01, "dec_lr": 0.02, "feed_lr": 0.03,
     "beta1": 0.5, "gamma_d": 0.7, "gamma_g": 1.3, "lambda_gp": 10.0, "recons_weight": 0.05, "a1": 0.4, "a2": 0.0,
     "freeze_dec": False, "encoded_noise": True}
BATCHES = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])]


@pytest.mark.parametrize("loop,encoded_noise,freeze_dec", [(0, True, False), (1, True, True), (1, False, False)])
def test_two_iterations_equal_the_released_formulation(loop, encoded_noise, freeze_dec):
    q = {**Q, "encoded_noise": encoded_noise, "freeze_dec": freeze_dec}
    torch.manual_seed(0)
    gan = vaegan.VAEGAN(C, A, HIDDEN).double()
    with torch.no_grad():
        for t in gan.parameters():
            t.normal_(0, 0.3)
    released = copy.deepcopy(gan)
    gx = torch.Generator().manual_seed(5)
    x_all = 0.05 + 0.9 * torch.rand(6, C, generator=gx, dtype=torch.float64)
    y_all = torch.tensor([0, 1, 2, 0, 1, 2])
    att = torch.rand(5, A, generator=gx, dtype=torch.float64)
    state = {"lambda": q["lambda_gp"]}
    g_code, g_released = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    step = stage_step(Stage("t", gan.networks(), vaegan.vaegan_optimizers(gan, q), None, epochs=1,
                            step=vaegan.train_step(gan, x_all, y_all, att, torch.tensor([3, 4]), q, g_code, state,
                                                   generator_batch="last")))
    opts, lam = gan_original.tfvaegan_optimizers(released, q), q["lambda_gp"]
    for it in range(2):
        got = {k: float(v) for k, v in step((loop, BATCHES)).items()}
        want, lam = gan_original.tfvaegan_iteration(released, opts, x_all, y_all, att, BATCHES, loop, q, g_released, lam)
        assert got == pytest.approx({k: float(v) for k, v in want.items()}, rel=1e-9, abs=1e-12), (it, got, want)
        assert state["lambda"] == pytest.approx(lam, rel=1e-12)
    for (name, p), r in zip(gan.state_dict().items(), released.state_dict().values()):
        assert torch.allclose(p, r, rtol=0, atol=1e-9), (name, float((p - r).abs().max()))
