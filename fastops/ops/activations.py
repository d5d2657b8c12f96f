"""Registrations for the activation family: fake kernels and autograd (activations are autocast-neutral: they run in
the dtype they are given, like torch's)."""

import torch

from ._layout import elementwise_output

fastops = torch.ops.fastops


@torch.library.register_fake("fastops::relu")
def _relu_fake(x):
    return elementwise_output(x)


@torch.library.register_fake("fastops::relu_backward")
def _relu_backward_fake(grad_output, result):
    return elementwise_output(grad_output, result)


def _save_output(ctx, inputs, output):
    ctx.save_for_backward(output)


def _relu_grad(ctx, grad_output):
    (result,) = ctx.saved_tensors
    return fastops.relu_backward(grad_output, result)


torch.library.register_autograd("fastops::relu", _relu_grad, setup_context=_save_output)
