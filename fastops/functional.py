"""The public functional API: typed, documented wrappers over ``torch.ops.fastops``, with torch.nn.functional's
signatures."""

import torch
from torch import Tensor

_ops = torch.ops.fastops

__all__ = ["bias_act", "geglu", "gelu", "leaky_relu", "relu", "sigmoid", "silu", "swiglu", "tanh"]


def _maybe_inplace(x: Tensor, result: Tensor, inplace: bool) -> Tensor:
    # The kernels are out-of-place; `inplace=True` writes the result back into x so callers that rely on x changing
    # (and autograd's checks on in-place use of leaves) behave as with torch.
    return x.copy_(result) if inplace else result


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(input, 0) elementwise (NaN propagates). Same contract as :func:`torch.nn.functional.relu`."""
    return _maybe_inplace(input, _ops.relu(input), inplace)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) with the exact erf CDF (``approximate='none'``) or the tanh approximation (``'tanh'``). Same
    contract as :func:`torch.nn.functional.gelu`."""
    return _ops.gelu(input, approximate=approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x). Same contract as :func:`torch.nn.functional.silu`."""
    return _maybe_inplace(input, _ops.silu(input), inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x if x > 0 else negative_slope * x. Same contract as :func:`torch.nn.functional.leaky_relu`."""
    return _maybe_inplace(input, _ops.leaky_relu(input, negative_slope), inplace)


def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)). Same contract as :func:`torch.sigmoid`."""
    return _ops.sigmoid(input)


def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent. Same contract as :func:`torch.tanh`."""
    return _ops.tanh(input)


def bias_act(x: Tensor, bias: Tensor, act: str) -> Tensor:
    """act(x + bias) in one pass, for x ``[..., N]`` and bias ``[N]`` of x's dtype; act is one of ``relu``,
    ``gelu``, ``gelu_tanh``, ``silu``, ``sigmoid``, ``tanh``. Equals ``F.<act>(x + bias)`` without materialising
    x + bias; the backward returns grad_x and grad_bias from one read of the gradient. The result is contiguous."""
    return _ops.bias_act(x, bias, act)


def swiglu(gate: Tensor, up: Tensor | None = None) -> Tensor:
    """silu(gate) * up. With ``up=None``, ``gate`` is one ``[..., 2H]`` tensor whose halves along the last
    dimension are gate and up (read in place, no copy); the result is ``[..., H]``."""
    return _ops.swiglu.packed(gate) if up is None else _ops.swiglu(gate, up)


def geglu(gate: Tensor, up: Tensor | None = None, approximate: str = "none") -> Tensor:
    """gelu(gate, approximate) * up; ``up=None`` takes the packed ``[..., 2H]`` form as in :func:`swiglu`."""
    if up is None:
        return _ops.geglu.packed(gate, approximate=approximate)
    return _ops.geglu(gate, up, approximate=approximate)
