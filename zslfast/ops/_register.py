"""Fake (meta) kernels and autograd formulas of the compiled operators.

Registered only when zslfast._C loaded. Each backward is itself a custom operator with a fused
kernel, so autograd, torch.compile and export all see opaque, shape-inferable ops.
"""
import torch

from zslfast import _ext

ops = torch.ops.zslfast


def _register():
    lib = "zslfast::"

    # --- fake kernels: output shapes only --------------------------------------------------
    @torch.library.register_fake(lib + "pairwise_distance")
    def _(x, y, metric):
        return x.new_empty(x.shape[0], y.shape[0])

    @torch.library.register_fake(lib + "pairwise_distance_backward")
    def _(grad, x, y, out, metric):
        return torch.empty_like(x), torch.empty_like(y)

    @torch.library.register_fake(lib + "nearest_prototype")
    def _(x, prototypes, metric, block_rows):
        return x.new_empty(x.shape[0], dtype=torch.long)

    @torch.library.register_fake(lib + "transition_matrix")
    def _(x, y, temperature, metric, exclude_self):
        return x.new_empty(x.shape[0], y.shape[0])

    @torch.library.register_fake(lib + "transition_matrix_backward")
    def _(grad, P, x, y, temperature, metric, exclude_self):
        return torch.empty_like(x), torch.empty_like(y)

    @torch.library.register_fake(lib + "self_transition_matrix")
    def _(x, temperature, metric, exclude_self):
        return x.new_empty(x.shape[0], x.shape[0])

    @torch.library.register_fake(lib + "self_transition_matrix_backward")
    def _(grad, P, x, temperature, metric, exclude_self):
        return torch.empty_like(x)

    @torch.library.register_fake(lib + "random_walk_landing")
    def _(centers, points, steps, temperature, metric):
        k, m = centers.shape[0], points.shape[0]
        return (centers.new_empty(steps + 1, k, k), centers.new_empty(steps + 1, k, m),
                centers.new_empty(m, m), centers.new_empty(m, k))

    @torch.library.register_fake(lib + "random_walk_landing_backward")
    def _(grad, Q, P_xx, P_xc, centers, points, temperature, metric):
        return torch.empty_like(centers), torch.empty_like(points)

    @torch.library.register_fake(lib + "affine_coupling")
    def _(x, s_raw, t, clamp, clamp_mode, reverse, save_scale):
        return (torch.empty_like(x), x.new_empty(x.shape[0]),
                torch.empty_like(x, memory_format=torch.contiguous_format) if save_scale else x.new_empty(0))

    @torch.library.register_fake(lib + "affine_coupling_backward")
    def _(grad_y, grad_logdet, x, s_raw, t, scale, clamp, clamp_mode, reverse):
        return torch.empty_like(x), torch.empty_like(x)

    @torch.library.register_fake(lib + "attention_pool")
    def _(features, queries, normalize, reduce):
        b, c, r = features.shape
        a = queries.shape[0]
        pooled = features.new_empty(b, c) if reduce == "mean" else features.new_empty(b, a, c)
        return pooled, features.new_empty(b, a, r), features.new_empty(b, r) if normalize else features.new_empty(0)

    @torch.library.register_fake(lib + "attention_pool_backward")
    def _(grad_pooled, grad_attn, features, queries, attn, scale, normalize, reduce, features_grad):
        gf = features.new_empty(features.shape) if features_grad else features.new_empty(0)
        return gf, torch.empty_like(queries)

    # --- autograd ------------------------------------------------------------------------------
    def pd_setup(ctx, inputs, output):
        x, y, metric = inputs
        ctx.save_for_backward(x, y, output)
        ctx.metric = metric

    def pd_backward(ctx, grad):
        x, y, out = ctx.saved_tensors
        gx, gy = ops.pairwise_distance_backward(grad, x, y, out, ctx.metric)
        return gx, gy, None

    torch.library.register_autograd(lib + "pairwise_distance", pd_backward, setup_context=pd_setup)

    def tm_setup(ctx, inputs, output):
        x, y, temperature, metric, exclude_self = inputs
        ctx.save_for_backward(x, y, output)
        ctx.args = (temperature, metric, exclude_self)

    def tm_backward(ctx, grad):
        x, y, P = ctx.saved_tensors
        gx, gy = ops.transition_matrix_backward(grad, P, x, y, *ctx.args)
        return gx, gy, None, None, None

    torch.library.register_autograd(lib + "transition_matrix", tm_backward, setup_context=tm_setup)

    def st_setup(ctx, inputs, output):
        x, temperature, metric, exclude_self = inputs
        ctx.save_for_backward(x, output)
        ctx.args = (temperature, metric, exclude_self)

    def st_backward(ctx, grad):
        x, P = ctx.saved_tensors
        return ops.self_transition_matrix_backward(grad, P, x, *ctx.args), None, None, None

    torch.library.register_autograd(lib + "self_transition_matrix", st_backward, setup_context=st_setup)

    def rw_setup(ctx, inputs, output):
        centers, points, steps, temperature, metric = inputs
        _, q, p_xx, p_xc = output
        ctx.save_for_backward(q, p_xx, p_xc, centers, points)
        ctx.mark_non_differentiable(q, p_xx, p_xc)
        ctx.set_materialize_grads(False)  # no zero-filled grads for the three intermediates
        ctx.args = (temperature, metric)

    def rw_backward(ctx, grad, _gq, _gpxx, _gpxc):
        # Only the landing probabilities are differentiable; the public wrapper never exposes the
        # intermediates (Q, P_xx, P_xc), which the op returns solely for this backward.
        if grad is None:
            return None, None, None, None, None
        q, p_xx, p_xc, centers, points = ctx.saved_tensors
        gc, gx = ops.random_walk_landing_backward(grad, q, p_xx, p_xc, centers, points, *ctx.args)
        return gc, gx, None, None, None

    torch.library.register_autograd(lib + "random_walk_landing", rw_backward, setup_context=rw_setup)

    def ac_setup(ctx, inputs, output):
        x, s_raw, t, clamp, clamp_mode, reverse, save_scale = inputs
        if not save_scale:
            raise RuntimeError("zslfast::affine_coupling was called with save_scale=False on inputs that "
                               "require grad; call zslfast.ops.affine_coupling, which sets it")
        ctx.save_for_backward(x, s_raw, t if reverse else None, output[2])
        ctx.mark_non_differentiable(output[2])
        ctx.set_materialize_grads(False)  # no zero-filled B×L grad for the saved scale
        ctx.args = (clamp, clamp_mode, reverse)

    def ac_backward(ctx, grad_y, grad_logdet, _grad_scale):
        x, s_raw, t, scale = ctx.saved_tensors
        clamp, clamp_mode, reverse = ctx.args
        if grad_y is None and grad_logdet is None:
            return None, None, None, None, None, None, None
        if grad_y is None:
            grad_y = torch.zeros_like(x)
        if grad_logdet is None:
            grad_logdet = x.new_zeros(x.shape[0])
        gx, gs = ops.affine_coupling_backward(grad_y, grad_logdet, x, s_raw, t, scale, clamp, clamp_mode, reverse)
        # dy/dt is 1 (forward) or -exp(-s) (reverse), so grad_t is grad_y or -grad_x: no extra kernel.
        gt = -gx if reverse else grad_y
        return gx, gs, gt, None, None, None, None

    torch.library.register_autograd(lib + "affine_coupling", ac_backward, setup_context=ac_setup)

    def ap_setup(ctx, inputs, output):
        features, queries, normalize, reduce = inputs
        ctx.save_for_backward(features, queries, output[1], output[2])
        ctx.mark_non_differentiable(output[2])
        ctx.set_materialize_grads(False)  # an unused output gets no zero-filled gradient
        ctx.args = (normalize, reduce)

    def ap_backward(ctx, grad_pooled, grad_attn, _grad_scale):
        if grad_pooled is None and grad_attn is None:
            return None, None, None, None
        features, queries, attn, scale = ctx.saved_tensors
        features_grad = ctx.needs_input_grad[0]
        gf, gq = ops.attention_pool_backward(grad_pooled, grad_attn, features, queries, attn, scale, *ctx.args,
                                             features_grad)
        return (gf if features_grad else None), gq, None, None

    torch.library.register_autograd(lib + "attention_pool", ap_backward, setup_context=ap_setup)


if _ext._C is not None:
    _register()
