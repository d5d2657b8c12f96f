"""Activation modules with torch.nn's constructor signatures."""

from torch import Tensor, nn

from .. import functional as F


class ReLU(nn.Module):
    """Drop-in for :class:`torch.nn.ReLU`."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""
