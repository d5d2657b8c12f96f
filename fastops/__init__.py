"""fastops: hand-written CUDA and C++ kernels for matmul/Linear, activations and losses as real PyTorch operators.

Every op lives in the ``torch.ops.fastops`` namespace with autograd, a fake kernel (torch.compile / export) and,
where AMP applies, an autocast rule. Use :mod:`fastops.functional` or the drop-in modules in :mod:`fastops.nn`.
"""

import torch

from . import (
    _C,  # noqa: F401  (loading the library registers every schema and kernel)
    functional,
    nn,
    ops,  # noqa: F401  (fake kernels, autograd, autocast)
)
from .functional import linear, matmul, relu

__version__ = "0.1.0"

__all__ = ["functional", "has_cuda_kernels", "linear", "matmul", "nn", "relu"]


def has_cuda_kernels() -> bool:
    """True when this build of fastops contains the CUDA kernels (torch with CUDA and nvcc at build time)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("fastops::relu", "CUDA")
