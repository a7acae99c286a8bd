"""Small tensor functions shared by the methods."""
import torch


def class_means(x, y, num_classes):
    """Per-class means of ``x`` [N, D] by labels ``y`` (a segment mean) and the class counts [C];
    classes without samples get a zero mean."""
    counts = torch.bincount(y, minlength=num_classes)
    sums = x.new_zeros(num_classes, x.shape[1]).index_add_(0, y, x)
    return sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype), counts


# Input columns per block of the weight gradient in wide_linear (see there).
WEIGHT_GRAD_BLOCK = 1024


class _WideLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad.mm(weight) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight)
            g_t = grad.t()
            for j in range(0, weight.shape[1], WEIGHT_GRAD_BLOCK):  # each block into a fresh [O, block] product
                grad_w[:, j:j + WEIGHT_GRAD_BLOCK] = g_t.mm(x[:, j:j + WEIGHT_GRAD_BLOCK])
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def wide_linear(x, weight, bias=None):
    """``F.linear(x, weight, bias)`` for a wide input (thousands of columns) and a short batch, with
    the same values and gradients, its weight gradient computed in blocks of
    :data:`WEIGHT_GRAD_BLOCK` input columns on the CPU. One [O, D] product ``gradᵀ·x`` whose output
    rows are D floats long, D not a multiple of the kernel's tile (6,246 for SC-EGG's classifier
    inputs), ran at ~60% of the 2048³ GEMM rate on the development CPU (AMD EPYC, MKL, one thread);
    blocks of 1,024 columns, each into its own contiguous product, at ~90%, and the products are
    bitwise the same (benchmarks/README.md, "the final classifiers"). Not twice differentiable; on
    other devices, or for a narrow input, it is ``F.linear``."""
    if x.device.type != "cpu" or weight.shape[1] <= WEIGHT_GRAD_BLOCK:
        return torch.nn.functional.linear(x, weight, bias)
    return _WideLinear.apply(x, weight, bias)
