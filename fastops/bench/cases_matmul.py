"""Benchmark cases for the matmul family (headline rows named in shared/DESIGN.md): `matmul` fwd at MxNxK."""

from __future__ import annotations

import torch

import fastops.functional as FF

from .core import Case

# dtype label -> (torch dtype, TF32 allowed). 'tf32' is float32 storage on TF32 tensor cores.
_DTYPES = {
    "bfloat16": (torch.bfloat16, False),
    "float16": (torch.float16, False),
    "tf32": (torch.float32, True),
    "float32": (torch.float32, False),
}
_CUDA_SHAPES = ((4096, 4096, 4096), (8192, 8192, 8192), (8192, 4096, 11008), (16384, 4096, 4096),
                (128, 4096, 4096))


def _matmul_case(m: int, n: int, k: int, label: str) -> Case:
    dtype, tf32 = _DTYPES[label]

    def make_inputs(device):
        return (torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype))

    return Case(
        op="matmul", dtype=label, shape=f"{m}x{n}x{k}", make_inputs=make_inputs,
        providers={"fastops": FF.matmul, "torch": torch.matmul}, modes=("fwd",), tf32=tf32,
        flops=lambda mode: 2.0 * m * n * k,
    )


def cases(device: str, quick: bool) -> list[Case]:
    if device == "cuda":
        shapes = _CUDA_SHAPES[:1] if quick else _CUDA_SHAPES
        return [_matmul_case(m, n, k, label) for m, n, k in shapes for label in _DTYPES]
    size = 256 if quick else 1024  # the CPU target: float32 at 1024^3 against torch's oneDNN/MKL
    return [_matmul_case(size, size, size, "float32")]
