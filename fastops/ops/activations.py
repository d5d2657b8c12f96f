"""Registrations for the activation family: fake kernels (the autograd kernels are C++: csrc/activations/
activations_autograd.cpp). Activations are autocast-neutral: they run in the dtype they are given, like torch's, so no
autocast rule is registered."""

import torch

from ._layout import check_same_device, elementwise_output

fastops = torch.ops.fastops

# ---- unary activations: fakes mirror the elementwise layout rule ----


def _unary_fake(x, *args):
    return elementwise_output(x)


def _unary_backward_fake(grad_output, saved, *args):
    check_same_device("activation_backward", grad_output, saved=saved)
    return elementwise_output(grad_output, saved)


for _name in ("relu", "gelu", "silu", "leaky_relu", "sigmoid", "tanh"):
    torch.library.register_fake(f"fastops::{_name}")(_unary_fake)
    torch.library.register_fake(f"fastops::{_name}_backward")(_unary_backward_fake)


# ---- bias_act: the C++ side returns contiguous tensors ----


@torch.library.register_fake("fastops::bias_act")
def _bias_act_fake(x, bias, act):
    check_same_device("bias_act", x, bias=bias)
    return x.new_empty(x.shape)


@torch.library.register_fake("fastops::bias_act_backward")
def _bias_act_backward_fake(grad_output, x, bias, act):
    check_same_device("bias_act_backward", x, grad_output=grad_output, bias=bias)
    return x.new_empty(x.shape), (bias.new_empty(bias.shape) if bias is not None else x.new_empty(0))


# ---- gated units: swiglu / geglu on (gate, up) or on one packed [..., 2H] tensor ----


def _glu_fake(gate, up, *args):
    check_same_device("glu", gate, up=up)
    return gate.new_empty(gate.shape)


def _glu_packed_fake(x, *args):
    torch._check(x.dim() >= 1 and x.shape[-1] % 2 == 0, lambda: "x's last dimension must be even")
    return x.new_empty((*x.shape[:-1], x.shape[-1] // 2))


for _name in ("swiglu", "geglu"):
    torch.library.register_fake(f"fastops::{_name}")(_glu_fake)
    torch.library.register_fake(f"fastops::{_name}.packed")(_glu_packed_fake)


@torch.library.register_fake("fastops::glu_backward")
def _glu_backward_fake(grad_output, gate, up, act):
    check_same_device("glu_backward", gate, grad_output=grad_output, up=up)
    return gate.new_empty(gate.shape), up.new_empty(up.shape)


@torch.library.register_fake("fastops::glu_packed_backward")
def _glu_packed_backward_fake(grad_output, x, act):
    check_same_device("glu_packed_backward", x, grad_output=grad_output)
    return x.new_empty(x.shape)
