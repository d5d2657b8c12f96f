"""The activation table's Python half, and the family's fake kernels (the autograd kernels are C++:
csrc/activations/activations_autograd.cpp). Activations are autocast-neutral: they run in the dtype they are given,
like torch's, so no autocast rule is registered."""

from typing import NamedTuple

import torch

from ._layout import check_same_device, elementwise_output

fastops = torch.ops.fastops


class Activation(NamedTuple):
    """One row of the activation table; its C++ twin is FASTOPS_ACTIVATIONS in csrc/activations/activation_math.h,
    which generates the kernels, the schemas and the autograd."""

    name: str  # the fused ops' `act` name, and the op's name unless `op` says otherwise
    fusion: str = ""  # "gemm": linear_act's epilogue, bias_act and the gated units; "rows": the latter two
    op: str = ""  # the fastops op it runs through, when not `name` (gelu_tanh is gelu(x, approximate='tanh'))

    @property
    def op_name(self) -> str:
        return self.op or self.name


ACTIVATIONS = (
    Activation("relu", "gemm"),
    Activation("gelu", "gemm"),
    Activation("gelu_tanh", "gemm", op="gelu"),
    Activation("silu", "gemm"),
    Activation("leaky_relu"),
    Activation("sigmoid", "rows"),
    Activation("tanh", "rows"),
    Activation("elu"),
    Activation("softplus"),
    Activation("mish"),
    Activation("hardswish"),
    Activation("hardsigmoid"),
    Activation("hardtanh"),
)

# The fastops ops of the unary activations (each with a <name>_backward), and the `act` names of the fused ops.
UNARY_OPS = tuple(dict.fromkeys(a.op_name for a in ACTIVATIONS))
ROW_FUSED = tuple(a.name for a in ACTIVATIONS if a.fusion)
GEMM_FUSED = tuple(a.name for a in ACTIVATIONS if a.fusion == "gemm")

# ---- unary activations: fakes mirror the elementwise layout rule ----


def _unary_fake(x, *args):
    return elementwise_output(x)


def _unary_backward_fake(grad_output, saved, *args):
    check_same_device("activation_backward", grad_output, saved=saved)
    return elementwise_output(grad_output, saved)


for _name in UNARY_OPS:
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


# ---- torch's glu(x, dim): the halves of x along dim, a * sigmoid(b) ----


def _glu_dim_shape(x, dim: int):
    torch._check(x.dim() > 0, lambda: "glu does not support scalars because halving size must be even")
    torch._check_index(-x.dim() <= dim < x.dim(), lambda: f"Dimension out of range (expected to be in range of "
                       f"[{-x.dim()}, {x.dim() - 1}], but got {dim})")
    d = dim % x.dim()
    torch._check(x.shape[d] % 2 == 0,
                 lambda: f"Halving dimension must be even, but dimension {d} is size {x.shape[d]}")
    return (*x.shape[:d], x.shape[d] // 2, *x.shape[d + 1:])


@torch.library.register_fake("fastops::glu")
def _glu_dim_fake(x, dim=-1):
    return x.new_empty(_glu_dim_shape(x, dim))


@torch.library.register_fake("fastops::glu_dim_backward")
def _glu_dim_backward_fake(grad_output, x, dim):
    check_same_device("glu_dim_backward", x, grad_output=grad_output)
    return x.new_empty(x.shape)
