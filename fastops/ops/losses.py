"""Registrations for the loss family: fake kernels and autocast (the autograd kernels are C++: csrc/losses/
losses_autograd.cpp).

Autocast: torch runs every loss in float32 under autocast. The elementwise losses get that through
``register_autocast`` (inputs cast to float32). Cross entropy does not: its kernel reads 16-bit logits directly and
accumulates in float32 anyway, so an fp32 copy of the [N, C] logits would only cost memory and bandwidth; instead
fastops::cross_entropy_loss returns a float32 loss when autocast is on (csrc/losses/cross_entropy_loss.cpp).
"""

import torch

from ._layout import check_same_device, elementwise_output

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


@torch.library.register_fake("fastops::cross_entropy_loss_forward")
def _cross_entropy_loss_forward_fake(logits, target, weight, reduction, ignore_index, label_smoothing, dtype):
    n = logits.shape[0]
    loss = logits.new_empty((n,) if reduction == REDUCTIONS["none"] else (), dtype=dtype)
    return (loss, logits.new_empty((n,), dtype=torch.float64), logits.new_empty((n,), dtype=math_dtype(logits.dtype)),
            logits.new_empty((), dtype=torch.float64))


@torch.library.register_fake("fastops::cross_entropy_loss_forward_grad")
def _cross_entropy_loss_forward_grad_fake(logits, target, weight, reduction, ignore_index, label_smoothing, dtype):
    return (logits.new_empty((), dtype=dtype), logits.new_empty(logits.shape),
            logits.new_empty((), dtype=torch.float64))


@torch.library.register_fake("fastops::cross_entropy_forward_grad_")
def _cross_entropy_forward_grad_inplace_fake(logits, target, weight, ignore_index, label_smoothing, grad_scale):
    return logits.new_empty((logits.shape[0],), dtype=torch.float64)


# ---- nll_loss: one float64 loss and weight per row of input [C] / [N, C] / [N, C, d...] ----


def _nll_rows(input) -> int:
    rows = 1
    if input.dim() >= 2:
        rows = input.shape[0]
        for size in input.shape[2:]:
            rows = rows * size
    return rows


@torch.library.register_fake("fastops::nll_loss_forward")
def _nll_loss_forward_fake(input, target, weight, ignore_index):
    check_same_device("nll_loss_forward", input, target=target, weight=weight)
    rows = _nll_rows(input)
    torch._check(target.numel() == rows, lambda: f"fastops.nll_loss_forward: target must have one class per row "
                                                 f"({rows}), got {target.numel()}")
    loss = input.new_empty((rows,), dtype=torch.float64)
    return loss, torch.empty_like(loss)


@torch.library.register_fake("fastops::nll_loss_backward")
def _nll_loss_backward_fake(grad_rows, input, target, weight, ignore_index):
    check_same_device("nll_loss_backward", input, grad_rows=grad_rows, target=target, weight=weight)
    return input.new_empty(input.shape)


@torch.library.register_fake("fastops::scale_rows_")
def _scale_rows_fake(x, scale):
    return None


# ---- elementwise losses ----


# The dtype each loss computes and returns in (csrc/losses/losses.h: pointwise_loss_dtype).
_LOSS_DTYPE = {
    "mse_loss": lambda input, target: torch.promote_types(input.dtype, target.dtype),
    "l1_loss": lambda input, target: torch.promote_types(input.dtype, target.dtype),
    "binary_cross_entropy": lambda input, target: input.dtype,
    "smooth_l1_loss": lambda input, target: torch.promote_types(input.dtype, target.dtype),
    "huber_loss": lambda input, target: input.dtype,
    "binary_cross_entropy_with_logits": lambda input, target: target.dtype,
    "kl_div": lambda input, target: _kl_div_dtype(input, target),
}


def _kl_div_dtype(input, target) -> torch.dtype:
    torch._check(not (input.dtype.is_complex or target.dtype.is_complex), lambda: "kl_div: Complex inputs not supported.")
    torch._check(input.dtype.is_floating_point and target.dtype.is_floating_point,
                 lambda: "kl_div: Integral inputs not supported.")
    return torch.promote_types(input.dtype, target.dtype)


def _pointwise_fake(name, input, target, weight=None, pos_weight=None, reduction=1):
    check_same_device(name, input, target=target, weight=weight, pos_weight=pos_weight)
    dtype = _LOSS_DTYPE[name](input, target)
    if reduction == REDUCTIONS["none"]:
        return elementwise_output(input, target, *[t for t in (weight, pos_weight) if t is not None]).to(dtype)
    return input.new_empty((), dtype=dtype)


def _pointwise_backward_fake(name, grad_output, input, target, weight=None, pos_weight=None, reduction=1):
    check_same_device(name, input, grad_output=grad_output, target=target, weight=weight, pos_weight=pos_weight)
    extra = [t for t in (weight, pos_weight) if t is not None]
    if reduction == REDUCTIONS["none"]:
        extra.append(grad_output)
    return elementwise_output(input, target, *extra).to(_LOSS_DTYPE[name](input, target))


def _register_pointwise(name: str) -> None:
    """Fake and autocast for `name(input, target, reduction[, param])` and its `name_backward`."""

    def fake(input, target, reduction=1, param=None):
        return _pointwise_fake(name, input, target, reduction=reduction)

    def backward_fake(grad_output, input, target, reduction, param=None):
        return _pointwise_backward_fake(name, grad_output, input, target, reduction=reduction)

    torch.library.register_fake(f"fastops::{name}", fake)
    torch.library.register_fake(f"fastops::{name}_backward", backward_fake)
    for device_type in ("cpu", "cuda"):
        torch.library.register_autocast(f"fastops::{name}", device_type, torch.float32)


# kl_div's extra argument is log_target where the others' is beta / delta; torch runs kl_div in float32 under autocast
# on both devices too.
for _name in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div"):
    _register_pointwise(_name)


@torch.library.register_fake("fastops::binary_cross_entropy")
def _bce_prob_fake(input, target, weight=None, reduction=1):
    torch._check(target.dtype == input.dtype, lambda: f"Found dtype {target.dtype} but expected {input.dtype}")
    return _pointwise_fake("binary_cross_entropy", input, target, weight, None, reduction)


@torch.library.register_fake("fastops::binary_cross_entropy_backward")
def _bce_prob_backward_fake(grad_output, input, target, weight, reduction):
    return _pointwise_backward_fake("binary_cross_entropy", grad_output, input, target, weight, None, reduction)


# torch's binary_cross_entropy runs in float32 under CPU autocast; CUDA autocast refuses it as unsafe with torch's
# message (an AutocastCUDA kernel in csrc/losses/losses_autocast.cpp).
torch.library.register_autocast("fastops::binary_cross_entropy", "cpu", torch.float32)


@torch.library.register_fake("fastops::binary_cross_entropy_with_logits")
def _bce_fake(input, target, weight=None, pos_weight=None, reduction=1):
    return _pointwise_fake("binary_cross_entropy_with_logits", input, target, weight, pos_weight, reduction)


@torch.library.register_fake("fastops::binary_cross_entropy_with_logits_backward")
def _bce_backward_fake(grad_output, input, target, weight, pos_weight, reduction):
    return _pointwise_backward_fake("binary_cross_entropy_with_logits", grad_output, input, target, weight,
                                    pos_weight, reduction)


for _device_type in ("cpu", "cuda"):
    torch.library.register_autocast("fastops::binary_cross_entropy_with_logits", _device_type, torch.float32)
