"""The public functional API: typed, documented wrappers over ``torch.ops.fastops``, with torch.nn.functional's
signatures."""

import torch
from torch import Tensor

_ops = torch.ops.fastops

__all__ = ["relu"]


def _maybe_inplace(x: Tensor, result: Tensor, inplace: bool) -> Tensor:
    # The kernels are out-of-place; `inplace=True` writes the result back into x so callers that rely on x changing
    # (and autograd's checks on in-place use of leaves) behave as with torch.
    return x.copy_(result) if inplace else result


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(input, 0) elementwise (NaN propagates). Same contract as :func:`torch.nn.functional.relu`."""
    return _maybe_inplace(input, _ops.relu(input), inplace)
