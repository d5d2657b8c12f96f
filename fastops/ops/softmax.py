"""Registrations for softmax / log_softmax: fake kernels (the autograd kernels are C++: csrc/softmax/
softmax_autograd.cpp). Like torch's, they run in the dtype they are given (F.softmax's dtype= casts first), so no
autocast rule is registered."""

import torch

from ._layout import check_same_device


def _wrapped_dim(op: str, x: torch.Tensor, dim: int) -> int:
    """c10::maybe_wrap_dim: a 0-dim tensor takes dim 0 or -1; torch's message otherwise."""
    rank = max(x.dim(), 1)
    torch._check(-rank <= dim < rank, lambda: f"Dimension out of range (expected to be in range of [{-rank}, "
                                              f"{rank - 1}], but got {dim})")
    return dim


def _float_only(op: str, name: str, t: torch.Tensor) -> None:
    torch._check(t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64),
                 lambda: f"fastops.{op}: {name} must be float16/bfloat16/float32/float64, got {t.dtype}")


def _forward_fake(op):
    def fake(x, dim):
        _float_only(op, "x", x)
        _wrapped_dim(op, x, dim)
        return x.new_empty(x.shape)  # contiguous, as the C++ kernels and torch's

    return fake


def _backward_fake(op):
    def fake(grad_output, output, dim):
        check_same_device(op, grad_output, output=output)
        _float_only(op, "output", output)
        torch._check(grad_output.dtype == output.dtype,
                     lambda: f"fastops.{op}: output must have the dtype of grad_output ({grad_output.dtype}), "
                             f"got {output.dtype}")
        torch._check(grad_output.shape == output.shape,
                     lambda: f"fastops.{op}: grad_output must have the shape of output {list(output.shape)}, "
                             f"got {list(grad_output.shape)}")
        _wrapped_dim(op, output, dim)
        return output.new_empty(output.shape)

    return fake


for _name in ("softmax", "log_softmax"):
    torch.library.register_fake(f"fastops::{_name}")(_forward_fake(_name))
    torch.library.register_fake(f"fastops::{_name}_backward")(_backward_fake(f"{_name}_backward"))
