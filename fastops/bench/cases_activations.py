"""Benchmark cases for the activation family (headline rows named in shared/DESIGN.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fastops.functional as FF

from .core import Case

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _elementwise_case(op: str, fast, native, n: int, dtype: str, saved_reads: int = 1) -> Case:
    """A unary activation over n elements: fwd reads x and writes y; bwd reads grad + what the backward saved
    and writes grad_input."""
    torch_dtype = _DTYPES[dtype]
    size = torch.finfo(torch_dtype).bits // 8

    def make_inputs(device):
        return (torch.randn(n, device=device, dtype=torch_dtype, requires_grad=True),)

    return Case(
        op=op, dtype=dtype, shape=str(n), make_inputs=make_inputs,
        providers={"fastops": fast, "torch": native}, modes=("fwd", "bwd"),
        bytes=lambda mode: (2 if mode == "fwd" else 2 + saved_reads) * n * size,
    )


def cases(device: str, quick: bool) -> list[Case]:
    # 2^28 elements is the headline GPU size (512 MiB of bf16: far past L2); 2^24 float32 is the CPU target size.
    if device == "cuda":
        n = 1 << 24 if quick else 1 << 28
    else:
        n = 1 << 20 if quick else 1 << 24
    out = []
    for dtype in _DTYPES:
        out.append(_elementwise_case("relu", FF.relu, F.relu, n, dtype))
    return out
