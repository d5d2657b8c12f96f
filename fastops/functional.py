"""The public functional API: typed, documented wrappers over ``torch.ops.fastops``, with torch.nn.functional's
signatures."""

import torch
from torch import Tensor

_ops = torch.ops.fastops

__all__ = ["relu", "matmul", "linear"]


def _maybe_inplace(x: Tensor, result: Tensor, inplace: bool) -> Tensor:
    # The kernels are out-of-place; `inplace=True` writes the result back into x so callers that rely on x changing
    # (and autograd's checks on in-place use of leaves) behave as with torch.
    return x.copy_(result) if inplace else result


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(input, 0) elementwise (NaN propagates). Same contract as :func:`torch.nn.functional.relu`."""
    return _maybe_inplace(input, _ops.relu(input), inplace)


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product with :func:`torch.matmul`'s contract: 1-D operands are promoted to a row (input) or a column
    (other) and the added dim is removed again; batch dims broadcast. float32 on CUDA uses TF32 tensor cores iff
    ``torch.backends.cuda.matmul.allow_tf32`` (i.e. ``torch.get_float32_matmul_precision() != 'highest'``)."""
    if input.dim() == 0 or other.dim() == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are {input.dim()}D and "
                           f"{other.dim()}D")
    a = input.unsqueeze(0) if input.dim() == 1 else input
    b = other.unsqueeze(-1) if other.dim() == 1 else other
    out = _ops.matmul(a, b)
    if other.dim() == 1:
        out = out.squeeze(-1)
    if input.dim() == 1:
        out = out.squeeze(-2) if other.dim() > 1 else out.squeeze(-1)
    return out


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias`` with :func:`torch.nn.functional.linear`'s contract; the bias add is fused into the
    GEMM and the weight is read transposed in place."""
    return _ops.linear(input, weight, bias)
