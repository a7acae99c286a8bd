"""zslfast.nn.functional: wide_linear is F.linear with a blocked weight gradient."""
import pytest
import torch

from zslfast.eval.classifier import SoftmaxClassifier
from zslfast.nn import functional


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("in_dim", [2500, 1024 * 3])  # a ragged last block, and whole blocks only
def test_wide_linear_equals_linear_values_and_gradients(dtype, tol, in_dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, in_dim, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(11, in_dim, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(11, generator=g, dtype=dtype, requires_grad=True)
    up = torch.randn(37, 11, generator=g, dtype=dtype)
    grads = []
    for f in (torch.nn.functional.linear, functional.wide_linear):
        out = f(x, w, b)
        grads.append((out.detach(), *torch.autograd.grad((out * up).sum(), (x, w, b))))
    want, got = grads
    assert type(functional.wide_linear(x, w, b).grad_fn).__name__ == "_WideLinearBackward"
    for a, c in zip(want, got):
        assert torch.allclose(a, c, rtol=tol, atol=tol * a.abs().max().item())


def test_the_final_classifier_uses_it_for_wide_inputs_only():
    wide, narrow = SoftmaxClassifier(3000, 5), SoftmaxClassifier(64, 5)
    assert type(wide(torch.randn(2, 3000)).grad_fn).__name__ == "_WideLinearBackward"
    assert type(narrow(torch.randn(2, 64)).grad_fn).__name__ != "_WideLinearBackward"
