"""TF-VAEGAN's pieces: weighted L1 and the VAE loss by hand, the gradient penalty in closed form for a
linear critic, the adaptive λ rule, zero-weight feedback, the decoder's unit norm, the init."""
import math

import pytest
import torch

from zslfast.nn import vaegan


def test_weighted_l1_by_hand():
    p = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.0], [3.0, -4.0]], dtype=torch.float64)
    # row 0: d = (1, 2): (1 + 8)/√5; row 1: d = (−3, 4): (27 + 64)/5; mean over the two rows
    expected = ((1 + 8) / math.sqrt(5) + (27 + 64) / 5) / 2
    assert vaegan.weighted_l1(p, q).item() == pytest.approx(expected, rel=1e-14)
    assert vaegan.weighted_l1(p, p).item() == 0.0  # d = 0: the eps guard gives 0, not NaN


def test_vae_loss_by_hand():
    x = torch.tensor([[0.2, 0.9]], dtype=torch.float64)
    recon = torch.tensor([[0.5, 0.6]], dtype=torch.float64)
    mu, logvar = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[math.log(2.0)]], dtype=torch.float64)
    bce = -sum(t * math.log(r + 1e-12) + (1 - t) * math.log(1 - r - 1e-12) for t, r in ((0.2, 0.5), (0.9, 0.6)))
    kl = -0.5 * (1 + math.log(2.0) - 0.09 - 2.0)
    assert vaegan.vae_loss(recon, x, mu, logvar).item() == pytest.approx(bce + kl, rel=1e-10)
    # summed over features and the batch, then divided by B: two copies give the same value
    assert vaegan.vae_loss(recon.repeat(2, 1), x.repeat(2, 1), mu.repeat(2, 1), logvar.repeat(2, 1)).item() == \
        pytest.approx(bce + kl, rel=1e-10)


class LinearCritic(torch.nn.Module):
    def __init__(self, w, v):
        super().__init__()
        self.w, self.v = w, v

    def forward(self, x, a):
        return x @ self.w + a @ self.v


def test_gradient_penalty_closed_form_for_a_linear_critic():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, dtype=torch.float64, generator=g)
    critic = LinearCritic(w.clone().requires_grad_(), torch.randn(3, dtype=torch.float64, generator=g))
    real, fake = torch.randn(7, 5, dtype=torch.float64, generator=g), torch.randn(7, 5, dtype=torch.float64, generator=g)
    a = torch.randn(7, 3, dtype=torch.float64, generator=g)
    gp = vaegan.gradient_penalty(critic, real, fake, a, generator=g)
    # ∇_x D = w everywhere, whatever the interpolation: gp = (‖w‖ − 1)²
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-12)
    # and it trains the critic: d gp / d w = 2(‖w‖ − 1)·w/‖w‖
    (dw,) = torch.autograd.grad(gp, critic.w)
    assert torch.allclose(dw, 2 * (w.norm() - 1) * w / w.norm(), rtol=1e-12)


def test_gradient_penalty_of_a_real_critic_interpolates_per_row():
    torch.manual_seed(0)
    critic = vaegan.Critic(6, 2, hidden=16).double()
    real, fake, a = torch.rand(4, 6).double(), torch.rand(4, 6).double(), torch.rand(4, 2).double()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    gp = vaegan.gradient_penalty(critic, real, fake, a, generator=g1)
    u = torch.rand(4, 1, generator=g2, dtype=torch.float64)
    total = 0.0
    for i in range(4):  # row by row with autograd.functional: the same penalty
        xi = (u[i] * real[i] + (1 - u[i]) * fake[i])[None]
        grad = torch.autograd.functional.jacobian(lambda x: critic(x, a[i:i + 1]).sum(), xi)
        total += (grad.norm() - 1) ** 2
    assert gp.item() == pytest.approx(float(total / 4), rel=1e-10)


class AutogradOnly(torch.nn.Module):
    """A :class:`vaegan.Critic` seen only through its forward (no ``input_gradient``)."""

    def __init__(self, critic):
        super().__init__()
        self.critic = critic

    def forward(self, x, a):
        return self.critic(x, a)


def test_the_critic_input_gradient_in_closed_form_equals_autograd():
    """float64, pre-activations of both signs: the closed-form ∂D/∂x equals autograd's, and the
    penalty built on it has autograd's double-backward value and weight gradients (all of D's
    parameters, including the zero ones of b1 and of W1's attribute columns)."""
    torch.manual_seed(1)
    critic = vaegan.Critic(6, 3, hidden=32).double()
    torch.nn.init.normal_(critic.fc1.weight, 0, 0.5)
    torch.nn.init.normal_(critic.fc1.bias, 0, 0.5)
    x, a = torch.randn(9, 6, dtype=torch.float64), torch.rand(9, 3, dtype=torch.float64)
    pre = critic.fc1(torch.cat([x, a], 1))
    assert (pre > 0).any() and (pre < 0).any()
    xg = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(critic(xg, a).sum(), xg)
    assert torch.allclose(critic.input_gradient(x, a), want, rtol=1e-12, atol=1e-14)
    real, fake = torch.rand(9, 6, dtype=torch.float64), torch.rand(9, 6, dtype=torch.float64)
    grads = []
    for c in (critic, AutogradOnly(critic)):
        gp = vaegan.gradient_penalty(c, real, fake, a, generator=torch.Generator().manual_seed(4))
        grads.append((gp.detach(), torch.autograd.grad(gp, list(critic.parameters()), allow_unused=True)))
    (gp1, g1), (gp2, g2) = grads
    assert gp1.item() == pytest.approx(gp2.item(), rel=1e-12)
    for p, d1, d2 in zip(critic.parameters(), g1, g2):  # None: no gradient reaches it (the same as zeros)
        d1, d2 = (torch.zeros_like(p) if d is None else d for d in (d1, d2))
        assert torch.allclose(d1, d2, rtol=1e-10, atol=1e-13)
    assert g1[0][:, 6:].abs().max() == 0 and g1[0][:, :6].abs().max() > 0  # W1's attribute columns: 0


@pytest.mark.parametrize("gp,expected", [(1.2, 11.0), (1.05, 10.0), (1.02, 10.0), (1.001, 10.0), (0.5, 10 / 1.1)])
def test_adaptive_lambda(gp, expected):
    assert vaegan.adapt_lambda(10.0, gp) == pytest.approx(expected)


def test_zero_feedback_weight_is_no_feedback_and_the_decoder_is_unit_norm():
    torch.manual_seed(0)
    gen = vaegan.Generator(8, 3, 3, hidden=16)
    z, a, fb = torch.randn(5, 3), torch.rand(5, 3), torch.randn(5, 16)
    assert torch.equal(gen(z, a, fb, 0.0), gen(z, a))
    assert not torch.equal(gen(z, a, fb, 0.5), gen(z, a))
    out = gen(z, a)
    assert ((out > 0) & (out < 1)).all()
    dec = vaegan.AttributeDecoder(8, 3, hidden=16)
    att, hidden = dec(out)
    assert torch.allclose(att.norm(dim=1), torch.ones(5)) and hidden.shape == (5, 16)
    mu, logvar = vaegan.Encoder(8, 3, 3, hidden=16)(out, a)
    assert mu.shape == logvar.shape == (5, 3)
    assert vaegan.Feedback(16)(hidden).shape == (5, 16)


def test_init_is_normal_002_with_zero_bias():
    torch.manual_seed(0)
    enc = vaegan.Encoder(2048, 102, 102)
    assert abs(enc.fc1.weight.std().item() - 0.02) < 2e-4 and abs(enc.fc1.weight.mean().item()) < 2e-4
    assert all(float(m.bias.detach().abs().max()) == 0 for m in enc.modules() if isinstance(m, torch.nn.Linear))
    assert enc.fc1.in_features == 2048 + 102 and enc.mu.in_features == 2 * 102
