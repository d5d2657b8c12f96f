"""Benchmark cases for the matmul family (headline rows named in shared/DESIGN.md): `matmul` fwd at MxNxK and
`linear_gelu` fwd/full at tokens x in x out."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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

# The Hopper GEMM's ladder (docs/hopper_gemm.md), timed in the same run as cuBLAS: fastops.matmul with its later
# steps switched off through the extension's variant switches; 'fastops' itself has every step. On GPUs other than
# the H100/H200 they all run the mma.sync kernel.
_LADDER = {
    "fastops_mma_sync": {"FASTOPS_NO_SM90": "1"},
    "fastops_sm90_base": {"FASTOPS_SM90_NO_CLUSTER": "1", "FASTOPS_SM90_DIRECT_STORE": "1"},
    "fastops_sm90_tma_store": {"FASTOPS_SM90_NO_CLUSTER": "1"},
}
_LADDER_DTYPES = ("bfloat16", "tf32")


def _matmul_case(m: int, n: int, k: int, label: str, ladder: bool = False) -> Case:
    dtype, tf32 = _DTYPES[label]

    def make_inputs(device):
        a = torch.randn(m, k, device=device, dtype=dtype)
        if tf32:
            # B as Linear's weight ([n, k] read transposed): wgmma reads TF32 K-major only, so this is the layout
            # the Hopper kernel runs for float32 (a row-major [k, n] B takes the mma.sync kernel).
            return a, torch.randn(n, k, device=device, dtype=dtype).t()
        return a, torch.randn(k, n, device=device, dtype=dtype)

    providers = {"fastops": FF.matmul, "torch": torch.matmul}
    if ladder:
        providers.update({name: FF.matmul for name in _LADDER})
    return Case(
        op="matmul", dtype=label, shape=f"{m}x{n}x{k}", make_inputs=make_inputs, providers=providers,
        modes=("fwd",), tf32=tf32, flops=lambda mode: 2.0 * m * n * k, provider_env=_LADDER if ladder else {},
    )


def _linear_gelu_case(tokens: int, fan_in: int, fan_out: int) -> Case:
    """gelu(x W^T + b) in bfloat16: fastops.linear(activation="gelu") (the GELU in the Hopper GEMM's epilogue; GEMM +
    fused bias/GELU pass elsewhere) against torch's F.linear then F.gelu."""

    def make_inputs(device):
        def param(*shape):
            return torch.randn(*shape, device=device, dtype=torch.bfloat16).mul_(fan_in ** -0.5).requires_grad_()

        return (torch.randn(tokens, fan_in, device=device, dtype=torch.bfloat16, requires_grad=True),
                param(fan_out, fan_in), param(fan_out))

    return Case(
        op="linear_gelu", dtype="bfloat16", shape=f"{tokens}x{fan_in}x{fan_out}", make_inputs=make_inputs,
        providers={"fastops": lambda x, w, b: FF.linear(x, w, b, activation="gelu"),
                   "torch": lambda x, w, b: F.gelu(F.linear(x, w, b))},
        modes=("fwd", "full"),
        flops=lambda mode: (2.0 if mode == "fwd" else 6.0) * tokens * fan_in * fan_out,
    )


def cases(device: str, quick: bool) -> list[Case]:
    if device == "cuda":
        shapes = _CUDA_SHAPES[:1] if quick else _CUDA_SHAPES
        linear_shape = (1024, 1024, 4096) if quick else (8192, 4096, 16384)
        return [_matmul_case(m, n, k, label, ladder=not quick and label in _LADDER_DTYPES)
                for m, n, k in shapes for label in _DTYPES] + [_linear_gelu_case(*linear_shape)]
    size = 256 if quick else 1024  # the CPU target: float32 at 1024^3 against torch's oneDNN/MKL
    linear_shape = (64, 128, 256) if quick else (256, 512, 1024)
    # bfloat16 as well: the CPU GEMM's AMX path against torch's (oneDNN, also AMX where the CPU has it).
    # Long K, small M and N: a small layer's weight gradient over many tokens (the split-K path), as wide and as
    # narrow as a tile.
    long_k = 1 << (12 if quick else 18)
    return [_matmul_case(size, size, size, "float32"), _matmul_case(size, size, size, "bfloat16"),
            _matmul_case(8, 64, long_k, "float32"), _matmul_case(64, 8, long_k, "float32"),
            _linear_gelu_case(*linear_shape)]
