"""Activation modules: subclasses of their torch.nn twins (isinstance checks and init code keep working), with the
forward on fastops kernels."""

from torch import Tensor, nn

from .. import functional as F


class ReLU(nn.ReLU):
    """Drop-in for :class:`torch.nn.ReLU`."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class GELU(nn.GELU):
    """Drop-in for :class:`torch.nn.GELU`."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(nn.SiLU):
    """Drop-in for :class:`torch.nn.SiLU`."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(nn.LeakyReLU):
    """Drop-in for :class:`torch.nn.LeakyReLU`."""

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(nn.Sigmoid):
    """Drop-in for :class:`torch.nn.Sigmoid`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(nn.Tanh):
    """Drop-in for :class:`torch.nn.Tanh`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class SwiGLU(nn.Module):
    """silu(gate) * up on a packed ``[..., 2H]`` input (gate half first), or on ``(gate, up)``; no parameters."""

    def forward(self, input: Tensor, up: Tensor | None = None) -> Tensor:
        return F.swiglu(input, up)


class GeGLU(nn.Module):
    """gelu(gate, approximate) * up on a packed ``[..., 2H]`` input, or on ``(gate, up)``; no parameters."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor, up: Tensor | None = None) -> Tensor:
        return F.geglu(input, up, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"
