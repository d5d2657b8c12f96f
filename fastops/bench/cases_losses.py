"""Benchmark cases for the loss family (headline rows named in shared/DESIGN.md).

cross_entropy full = forward + backward; the minimal traffic counted is one read of the logits and one write of
their gradient (targets and per-row statistics are negligible). mse_loss full reads input and target and writes
the input's gradient. linear_cross_entropy (tokens x hidden x vocabulary) counts its three GEMMs' FLOPs (logits,
input gradient, weight gradient) and reports the peak extra memory; torch's chunked F.linear_cross_entropy (torch
>= 2.13) runs beside it where this torch has one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fastops.functional as FF

from .core import Case

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _cross_entropy_case(n: int, c: int, dtype: str) -> Case:
    torch_dtype = _DTYPES[dtype]
    size = torch.finfo(torch_dtype).bits // 8

    def make_inputs(device):
        logits = torch.randn(n, c, device=device, dtype=torch_dtype, requires_grad=True)
        return logits, torch.randint(0, c, (n,), device=device)

    return Case(
        op="cross_entropy", dtype=dtype, shape=f"{n}x{c}", make_inputs=make_inputs,
        providers={"fastops": FF.cross_entropy, "torch": F.cross_entropy}, modes=("fwd", "full"),
        bytes=lambda mode: (1 if mode == "fwd" else 2) * n * c * size,
    )


def _mse_case(n: int, dtype: str) -> Case:
    torch_dtype = _DTYPES[dtype]
    size = torch.finfo(torch_dtype).bits // 8

    def make_inputs(device):
        return (torch.randn(n, device=device, dtype=torch_dtype, requires_grad=True),
                torch.randn(n, device=device, dtype=torch_dtype))

    return Case(
        op="mse_loss", dtype=dtype, shape=str(n), make_inputs=make_inputs,
        providers={"fastops": FF.mse_loss, "torch": F.mse_loss}, modes=("fwd", "full"),
        bytes=lambda mode: (2 if mode == "fwd" else 3) * n * size,
    )


def _linear_cross_entropy_case(n: int, h: int, v: int, dtype: str) -> Case:
    torch_dtype = _DTYPES[dtype]

    def make_inputs(device):
        x = (torch.randn(n, h, device=device) / h**0.5).to(torch_dtype).requires_grad_()
        w = torch.randn(v, h, device=device, dtype=torch_dtype, requires_grad=True)
        return x, w, torch.randint(0, v, (n,), device=device)

    providers = {
        "fastops": lambda x, w, t: FF.linear_cross_entropy(x, w, t),
        "torch": lambda x, w, t: F.cross_entropy(F.linear(x, w), t),
    }
    if hasattr(torch.nn, "LinearCrossEntropyOptions"):
        options = torch.nn.LinearCrossEntropyOptions()
        providers["torch_chunked"] = lambda x, w, t: F.linear_cross_entropy(x, w, t, options=options)
    return Case(
        op="linear_cross_entropy", dtype=dtype, shape=f"{n}x{h}x{v}", make_inputs=make_inputs, providers=providers,
        modes=("full",), flops=lambda mode: (3 if mode == "full" else 1) * 2 * n * h * v,
    )


def cases(device: str, quick: bool) -> list[Case]:
    if device == "cuda":
        ce_shapes = ((8192, 32000), (8192, 128256), (4096, 256000))
        if quick:
            ce_shapes = ((1024, 32000),)
        mse_n = 1 << 24 if quick else 1 << 28
        dtypes = ("bfloat16",)
    else:
        # (4096, 10): a classifier's batch (the book's), where per-row work dominates, not the exponentials.
        ce_shapes = ((256, 32000),) if quick else ((1024, 32000), (256, 128256), (4096, 10))
        mse_n = 1 << 20 if quick else 1 << 24
        dtypes = ("bfloat16", "float32")
    if device == "cuda":
        lce_shapes = ((1024, 1024, 32000),) if quick else ((8192, 4096, 128256), (32768, 4096, 128256))
    else:
        lce_shapes = ((256, 256, 8192),) if quick else ((1024, 512, 32000),)
    out = [_cross_entropy_case(n, c, dtype) for n, c in ce_shapes for dtype in dtypes]
    out += [_linear_cross_entropy_case(n, h, v, "bfloat16") for n, h, v in lce_shapes]
    out += [_mse_case(mse_n, dtype) for dtype in ("bfloat16", "float32")]
    return out
