"""fastops.nn.Linear: torch.nn.Linear with its forward on fastops kernels."""

from torch import Tensor, nn

from .. import functional as F


class Linear(nn.Linear):
    """Drop-in for :class:`torch.nn.Linear` (same constructor, parameters, ``reset_parameters`` and state_dict
    keys: it *is* an ``nn.Linear``, so isinstance checks, init code and ``load_state_dict`` work both ways); the
    forward runs fastops.linear (bias fused into the GEMM), the backward fastops' GEMM and bias reduction."""

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)
