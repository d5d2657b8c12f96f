"""Per-call overhead rows: Linear, an activation and cross entropy on tensors so small that the kernels cost next to
nothing, so a row times what a call costs around them (argument checks, dispatch, the autograd mechanism, output
allocation). Small real models (Hugging Face's tiny GPT-2/Llama/BERT, nanoGPT) spend most of a training step there.

Linear's weight and bias are arguments that require grad, as a module's parameters do in training, so that 'full'
(forward + backward) computes all three gradients, not only the input's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fastops.functional as FF

from .core import Case

# Linear(8, 8) on a [2, 8] input (the size of a tiny model's projection), gelu and cross entropy on [2, 8].
_ROWS, _FEATURES = 2, 8


def _linear_case() -> Case:
    def make_inputs(device):
        def leaf(*shape):
            return torch.randn(*shape, device=device).requires_grad_()

        return leaf(_ROWS, _FEATURES), leaf(_FEATURES, _FEATURES), leaf(_FEATURES)

    return Case(
        op="linear_overhead", dtype="float32", shape=f"{_ROWS}x{_FEATURES}x{_FEATURES}", make_inputs=make_inputs,
        providers={"fastops": FF.linear, "torch": F.linear}, modes=("fwd", "full"),
        flops=lambda mode: (2.0 if mode == "fwd" else 6.0) * _ROWS * _FEATURES * _FEATURES,
    )


def _gelu_case() -> Case:
    def make_inputs(device):
        return (torch.randn(_ROWS, _FEATURES, device=device, requires_grad=True),)

    return Case(
        op="gelu_overhead", dtype="float32", shape=f"{_ROWS}x{_FEATURES}", make_inputs=make_inputs,
        providers={"fastops": FF.gelu, "torch": F.gelu}, modes=("fwd", "full"),
        bytes=lambda mode: (2 if mode == "fwd" else 5) * _ROWS * _FEATURES * 4,
    )


def _cross_entropy_case() -> Case:
    def make_inputs(device):
        logits = torch.randn(_ROWS, _FEATURES, device=device, requires_grad=True)
        return logits, torch.randint(0, _FEATURES, (_ROWS,), device=device)

    return Case(
        op="cross_entropy_overhead", dtype="float32", shape=f"{_ROWS}x{_FEATURES}", make_inputs=make_inputs,
        providers={"fastops": FF.cross_entropy, "torch": F.cross_entropy}, modes=("fwd", "full"),
        bytes=lambda mode: (1 if mode == "fwd" else 2) * _ROWS * _FEATURES * 4,
    )


def cases(device: str, quick: bool) -> list[Case]:
    return [_linear_case(), _gelu_case(), _cross_entropy_case()]
