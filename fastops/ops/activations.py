"""Registrations for the activation family: fake kernels and autograd. Activations are autocast-neutral: they run in
the dtype they are given, like torch's, so no autocast rule is registered."""

import torch

from ._layout import elementwise_output

fastops = torch.ops.fastops

# ---- unary activations: fakes mirror the elementwise layout rule ----


def _unary_fake(x, *args):
    return elementwise_output(x)


def _unary_backward_fake(grad_output, saved, *args):
    return elementwise_output(grad_output, saved)


for _name in ("relu", "gelu", "silu", "leaky_relu", "sigmoid", "tanh"):
    torch.library.register_fake(f"fastops::{_name}")(_unary_fake)
    torch.library.register_fake(f"fastops::{_name}_backward")(_unary_backward_fake)


def _save_output(ctx, inputs, output):
    ctx.save_for_backward(output)


def _save_input(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.params = inputs[1:]


def _relu_grad(ctx, grad_output):
    (result,) = ctx.saved_tensors
    return fastops.relu_backward(grad_output, result)


def _sigmoid_grad(ctx, grad_output):
    (result,) = ctx.saved_tensors
    return fastops.sigmoid_backward(grad_output, result)


def _tanh_grad(ctx, grad_output):
    (result,) = ctx.saved_tensors
    return fastops.tanh_backward(grad_output, result)


def _gelu_grad(ctx, grad_output):
    (x,) = ctx.saved_tensors
    return fastops.gelu_backward(grad_output, x, *ctx.params), None


def _silu_grad(ctx, grad_output):
    (x,) = ctx.saved_tensors
    return fastops.silu_backward(grad_output, x)


def _leaky_relu_grad(ctx, grad_output):
    (x,) = ctx.saved_tensors
    return fastops.leaky_relu_backward(grad_output, x, *ctx.params), None


torch.library.register_autograd("fastops::relu", _relu_grad, setup_context=_save_output)
torch.library.register_autograd("fastops::sigmoid", _sigmoid_grad, setup_context=_save_output)
torch.library.register_autograd("fastops::tanh", _tanh_grad, setup_context=_save_output)
torch.library.register_autograd("fastops::gelu", _gelu_grad, setup_context=_save_input)
torch.library.register_autograd("fastops::silu", _silu_grad, setup_context=_save_input)
torch.library.register_autograd("fastops::leaky_relu", _leaky_relu_grad, setup_context=_save_input)

# ---- bias_act: the C++ side returns contiguous tensors ----


@torch.library.register_fake("fastops::bias_act")
def _bias_act_fake(x, bias, act):
    return x.new_empty(x.shape)


@torch.library.register_fake("fastops::bias_act_backward")
def _bias_act_backward_fake(grad_output, x, bias, act):
    return x.new_empty(x.shape), (bias.new_empty(bias.shape) if bias is not None else x.new_empty(0))


def _bias_act_setup(ctx, inputs, output):
    x, bias, act = inputs
    ctx.save_for_backward(x, bias)  # x + bias is recomputed in the backward (see csrc/activations/activations.h)
    ctx.act = act


def _bias_act_grad(ctx, grad_output):
    x, bias = ctx.saved_tensors
    grad_x, grad_bias = fastops.bias_act_backward(grad_output, x, bias, ctx.act)
    return grad_x, grad_bias, None


torch.library.register_autograd("fastops::bias_act", _bias_act_grad, setup_context=_bias_act_setup)

# ---- gated units: swiglu / geglu on (gate, up) or on one packed [..., 2H] tensor ----


def _glu_fake(gate, up, *args):
    return gate.new_empty(gate.shape)


def _glu_packed_fake(x, *args):
    torch._check(x.dim() >= 1 and x.shape[-1] % 2 == 0, lambda: "x's last dimension must be even")
    return x.new_empty((*x.shape[:-1], x.shape[-1] // 2))


for _name in ("swiglu", "geglu"):
    torch.library.register_fake(f"fastops::{_name}")(_glu_fake)
    torch.library.register_fake(f"fastops::{_name}.packed")(_glu_packed_fake)


@torch.library.register_fake("fastops::glu_backward")
def _glu_backward_fake(grad_output, gate, up, act):
    return gate.new_empty(gate.shape), up.new_empty(up.shape)


@torch.library.register_fake("fastops::glu_packed_backward")
def _glu_packed_backward_fake(grad_output, x, act):
    return x.new_empty(x.shape)


def _gelu_act(approximate="none"):
    return "gelu_tanh" if approximate == "tanh" else "gelu"


def _glu_setup(act_of):
    """setup_context for a gated op whose activation name is act_of(*non-tensor args)."""

    def setup(ctx, inputs, output):
        n_tensors = 2 if len(inputs) >= 2 and isinstance(inputs[1], torch.Tensor) else 1
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.act = act_of(*inputs[n_tensors:])

    return setup


def _register_glu(name, act_of, n_params):
    def split_grad(ctx, grad_output):
        gate, up = ctx.saved_tensors
        return fastops.glu_backward(grad_output, gate, up, ctx.act) + (None,) * n_params

    def packed_grad(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return (fastops.glu_packed_backward(grad_output, x, ctx.act),) + (None,) * n_params

    torch.library.register_autograd(f"fastops::{name}", split_grad, setup_context=_glu_setup(act_of))
    torch.library.register_autograd(f"fastops::{name}.packed", packed_grad, setup_context=_glu_setup(act_of))


_register_glu("swiglu", lambda: "silu", 0)
_register_glu("geglu", _gelu_act, 1)
