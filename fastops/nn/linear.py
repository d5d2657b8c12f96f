"""fastops.nn.Linear: torch.nn.Linear with its forward on fastops kernels; LinearAct: Linear + activation fused."""

import torch
from torch import Tensor, nn

from .. import functional as F


class Linear(nn.Linear):
    """Drop-in for :class:`torch.nn.Linear` (same constructor, parameters, ``reset_parameters`` and state_dict
    keys: it *is* an ``nn.Linear``, so isinstance checks, init code and ``load_state_dict`` work both ways); the
    forward runs fastops.linear (bias fused into the GEMM), the backward fastops' GEMM and bias reduction."""

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)


class LinearAct(Linear):
    """``activation(x @ W.T + b)`` as one module: a Linear (same parameters, init and state_dict keys as
    torch.nn.Linear, so weights load from and into ``nn.Sequential(nn.Linear, nn.GELU)``'s Linear) whose output goes
    through fastops' fused bias + activation pass. ``activation``: relu, gelu, gelu_tanh or silu."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "gelu",
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        if activation not in F.LINEAR_ACTIVATIONS:
            raise ValueError(f"LinearAct: activation must be one of {', '.join(F.LINEAR_ACTIVATIONS)}, "
                             f"got {activation!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.activation = activation

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias, activation=self.activation)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}"
