"""Registrations for the loss family: fake kernels, autograd and autocast.

Autocast: torch runs every loss in float32 under autocast. The elementwise losses get that through
``register_autocast`` (inputs cast to float32). Cross entropy does not: its kernel reads 16-bit logits directly and
accumulates in float32 anyway, so an fp32 copy of the [N, C] logits would only cost memory and bandwidth; instead
``fastops.functional.cross_entropy`` returns a float32 loss when autocast is on (see there).
"""

import torch

from ._layout import elementwise_output

fastops = torch.ops.fastops

# torch's at::Reduction values, as the schemas take them.
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of a loss over `dtype` inputs (per-row losses and class weights live in it)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- cross entropy ----


@torch.library.register_fake("fastops::cross_entropy_forward")
def _cross_entropy_forward_fake(logits, target, weight, ignore_index, label_smoothing):
    n = logits.shape[0]
    loss = logits.new_empty((n,), dtype=torch.float64)
    return loss, torch.empty_like(loss), torch.empty_like(loss), logits.new_empty((n,), dtype=math_dtype(logits.dtype))


@torch.library.register_fake("fastops::cross_entropy_backward")
def _cross_entropy_backward_fake(grad_rows, logits, target, weight, lse, target_mass, ignore_index, label_smoothing):
    return logits.new_empty(logits.shape)


def _cross_entropy_setup(ctx, inputs, output):
    logits, target, weight, ctx.ignore_index, ctx.label_smoothing = inputs
    _, row_weight, lse, target_mass = output
    ctx.mark_non_differentiable(row_weight, lse, target_mass)
    ctx.save_for_backward(logits, target, weight, lse, target_mass)


def _cross_entropy_grad(ctx, grad_loss, _row_weight, _lse, _target_mass):
    logits, target, weight, lse, target_mass = ctx.saved_tensors
    grad_logits = fastops.cross_entropy_backward(
        grad_loss, logits, target, weight, lse, target_mass, ctx.ignore_index, ctx.label_smoothing
    )
    return grad_logits, None, None, None, None


# The backward recomputes softmax from the saved logits instead of saving an [N, C] gradient in the forward: that is
# one read of the logits in each direction plus one gradient write (a saved gradient costs a write in the forward
# and a read + write in the backward, and its 16-bit rounding followed by the scaling rounds each element twice).
torch.library.register_autograd(
    "fastops::cross_entropy_forward", _cross_entropy_grad, setup_context=_cross_entropy_setup
)


# The forward that writes the gradient too (cross_entropy_forward_grad), used by 'mean' and 'sum' when the logits
# require grad. Its per-row output is grad_scale * loss_i (grad_scale = 1 / total weight for 'mean') and its saved
# gradient is exactly d output_i / d logits_i, so the backward only multiplies row i by the upstream grad_rows[i],
# in place (scale_rows_), skipping rows whose factor is exactly 1: the usual `loss.backward()` costs one launch and
# no memory traffic. The logits are read twice and the gradient written once in the forward, against one read in
# the forward plus a read and a write in a recomputing backward.
# A later backward through a retained graph (retain_graph=True, gradcheck) finds the gradient already scaled by the
# first upstream factor f1 and returns saved * (f2 / f1) out of place: exact when f1 was 1, as in `loss.backward()`.
# Under torch.compile the saved gradient is an input of the compiled backward graph, which functionalization does
# not let an op mutate: inductor clones it before scale_rows_ (seen in its output code on torch 2.13), so there the
# backward costs one read and one write of the gradient, as a recomputing backward would; the free backward is an
# eager-mode property.


@torch.library.register_fake("fastops::cross_entropy_forward_grad")
def _cross_entropy_forward_grad_fake(logits, target, weight, ignore_index, label_smoothing, grad_scale):
    return logits.new_empty((logits.shape[0],), dtype=torch.float64), logits.new_empty(logits.shape)


@torch.library.register_fake("fastops::cross_entropy_forward_grad_")
def _cross_entropy_forward_grad_inplace_fake(logits, target, weight, ignore_index, label_smoothing, grad_scale):
    return logits.new_empty((logits.shape[0],), dtype=torch.float64)


@torch.library.register_fake("fastops::scale_rows_")
def _scale_rows_fake(x, scale):
    return None


def scale_saved_gradients(ctx, grads: list, factor: torch.Tensor) -> list:
    """The gradients a forward computed for an upstream gradient of 1, for the upstream `factor` (float64, one
    element or one per row of each gradient). The first backward scales them in place (scale_rows_: rows whose
    factor is exactly 1 are not touched); a later one through a retained graph returns them times factor / the
    first factor, out of place, exact when the first factor was 1. ctx.applied_factor must start as None."""
    if ctx.applied_factor is None:
        for g in grads:
            fastops.scale_rows_(g, factor)
        ctx.applied_factor = factor
        return grads
    ratio = factor / ctx.applied_factor
    return [g * ratio.reshape([-1] + [1] * (g.dim() - 1) if ratio.numel() > 1 else []).to(g.dtype) for g in grads]


def _cross_entropy_forward_grad_setup(ctx, inputs, output):
    _, grad_logits = output
    ctx.mark_non_differentiable(grad_logits)
    ctx.save_for_backward(grad_logits)
    ctx.applied_factor = None


def _cross_entropy_forward_grad_grad(ctx, grad_rows, _grad_logits):
    (grad_logits,) = ctx.saved_tensors
    (grad,) = scale_saved_gradients(ctx, [grad_logits], grad_rows.to(torch.float64).contiguous())
    return grad, None, None, None, None, None


torch.library.register_autograd(
    "fastops::cross_entropy_forward_grad", _cross_entropy_forward_grad_grad,
    setup_context=_cross_entropy_forward_grad_setup,
)


# ---- elementwise losses ----


def _pointwise_fake(input, target, weight=None, pos_weight=None, reduction=1):
    if reduction == REDUCTIONS["none"]:
        return elementwise_output(input, target, *[t for t in (weight, pos_weight) if t is not None])
    return input.new_empty(())


def _pointwise_backward_fake(grad_output, input, target, weight=None, pos_weight=None, reduction=1):
    extra = [t for t in (weight, pos_weight) if t is not None]
    if reduction == REDUCTIONS["none"]:
        extra.append(grad_output)
    return elementwise_output(input, target, *extra)


def _register_pointwise(name: str, has_param: bool) -> None:
    """Fake, autograd and autocast for `name(input, target, reduction[, param])` and its `name_backward`."""
    backward = getattr(fastops, f"{name}_backward")

    def fake(input, target, reduction=1, param=None):
        return _pointwise_fake(input, target, reduction=reduction)

    def backward_fake(grad_output, input, target, reduction, param=None):
        return _pointwise_backward_fake(grad_output, input, target, reduction=reduction)

    def setup(ctx, inputs, output):
        input, target, reduction = inputs[:3]
        ctx.reduction = reduction
        ctx.param = inputs[3] if has_param else None
        ctx.save_for_backward(input, target)

    def grad(ctx, grad_output):
        input, target = ctx.saved_tensors
        extra = (ctx.param,) if has_param else ()
        grad_input = backward(grad_output, input, target, ctx.reduction, *extra)
        # Each of these losses depends on input - target only, so d/d target = -(d/d input).
        grad_target = -grad_input if ctx.needs_input_grad[1] else None
        return (grad_input, grad_target, None) + ((None,) if has_param else ())

    torch.library.register_fake(f"fastops::{name}", fake)
    torch.library.register_fake(f"fastops::{name}_backward", backward_fake)
    torch.library.register_autograd(f"fastops::{name}", grad, setup_context=setup)
    for device_type in ("cpu", "cuda"):
        torch.library.register_autocast(f"fastops::{name}", device_type, torch.float32)


for _name, _has_param in (("mse_loss", False), ("smooth_l1_loss", True), ("huber_loss", True)):
    _register_pointwise(_name, _has_param)


@torch.library.register_fake("fastops::binary_cross_entropy_with_logits")
def _bce_fake(input, target, weight=None, pos_weight=None, reduction=1):
    return _pointwise_fake(input, target, weight, pos_weight, reduction)


@torch.library.register_fake("fastops::binary_cross_entropy_with_logits_backward")
def _bce_backward_fake(grad_output, input, target, weight, pos_weight, reduction):
    return _pointwise_backward_fake(grad_output, input, target, weight, pos_weight, reduction)


def _bce_setup(ctx, inputs, output):
    input, target, weight, pos_weight, reduction = inputs
    ctx.reduction = reduction
    ctx.save_for_backward(input, target, weight, pos_weight)


def _bce_grad(ctx, grad_output):
    input, target, weight, pos_weight = ctx.saved_tensors
    grad_input = fastops.binary_cross_entropy_with_logits_backward(
        grad_output, input, target, weight, pos_weight, ctx.reduction
    )
    grad_target = None
    if ctx.needs_input_grad[1]:
        # d/dt = weight * ((pos_weight - 1) softplus(-x) - x): rarely needed, so composed from torch ops.
        d = torch.nn.functional.softplus(-input)
        d = d * (pos_weight - 1) - input if pos_weight is not None else -input
        if weight is not None:
            d = d * weight
        if ctx.reduction == REDUCTIONS["mean"]:
            d = d / input.numel()
        grad_target = d * grad_output
    return grad_input, grad_target, None, None, None


torch.library.register_autograd(
    "fastops::binary_cross_entropy_with_logits", _bce_grad, setup_context=_bce_setup
)
for _device_type in ("cpu", "cuda"):
    torch.library.register_autocast("fastops::binary_cross_entropy_with_logits", _device_type, torch.float32)
