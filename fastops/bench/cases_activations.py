"""Benchmark cases for the activation family (headline rows named in shared/DESIGN.md)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fastops.functional as FF

from ..ops.activations import ACTIVATIONS
from .core import Case

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}



def _unary_pair(name: str):
    """(fastops, torch) for one row of the activation table."""
    if name == "gelu_tanh":
        return functools.partial(FF.gelu, approximate="tanh"), functools.partial(F.gelu, approximate="tanh")
    return getattr(FF, name), getattr(torch, name, None) or getattr(F, name)


# op name -> (fastops, torch) for the unary rows, one per row of the activation table; all read x (or the output)
# once in the backward.
_UNARY = {row.name: _unary_pair(row.name) for row in ACTIVATIONS}


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


def _bias_gelu_case(rows: int, cols: int, dtype: str) -> Case:
    """gelu(x + bias), x [rows, cols]: fwd reads x, writes y; the backward reads grad and x and writes grad_x (the
    bias vector and grad_bias are negligible). 'full' = fwd + bwd."""
    torch_dtype = _DTYPES[dtype]
    size = torch.finfo(torch_dtype).bits // 8

    def make_inputs(device):
        x = torch.randn(rows, cols, device=device, dtype=torch_dtype, requires_grad=True)
        bias = torch.randn(cols, device=device, dtype=torch_dtype, requires_grad=True)
        return x, bias

    return Case(
        op="bias_gelu", dtype=dtype, shape=f"{rows}x{cols}", make_inputs=make_inputs,
        providers={"fastops": lambda x, b: FF.bias_act(x, b, "gelu"), "torch": lambda x, b: F.gelu(x + b)},
        modes=("fwd", "full"), bytes=lambda mode: (2 if mode == "fwd" else 5) * rows * cols * size,
    )


def _torch_swiglu(x):
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def _swiglu_case(tokens: int, hidden: int, dtype: str) -> Case:
    """silu(gate) * up on one packed [tokens, 2 * hidden] tensor: fwd reads 2H and writes H per token; the backward
    reads grad (H) and x (2H) and writes grad_x (2H)."""
    torch_dtype = _DTYPES[dtype]
    size = torch.finfo(torch_dtype).bits // 8

    def make_inputs(device):
        return (torch.randn(tokens, 2 * hidden, device=device, dtype=torch_dtype, requires_grad=True),)

    return Case(
        op="swiglu", dtype=dtype, shape=f"{tokens}x{hidden}", make_inputs=make_inputs,
        providers={"fastops": FF.swiglu, "torch": _torch_swiglu},
        modes=("fwd", "full"), bytes=lambda mode: (3 if mode == "fwd" else 8) * tokens * hidden * size,
    )


def cases(device: str, quick: bool) -> list[Case]:
    # 2^28 elements is the headline GPU size (512 MiB of bf16: far past L2); 2^24 float32 is the CPU target size.
    if device == "cuda":
        n = 1 << 24 if quick else 1 << 28
        rows, cols = (4096, 4096) if quick else (16384, 8192)
    else:
        n = 1 << 20 if quick else 1 << 24
        rows, cols = (256, 1024) if quick else (2048, 2048)
    out = []
    for dtype in _DTYPES:
        for op, (fast, native) in _UNARY.items():
            out.append(_elementwise_case(op, fast, native, n, dtype))
        out.append(_bias_gelu_case(rows, cols, dtype))
        out.append(_swiglu_case(rows, cols, dtype))
    return out
