"""Activation modules: subclasses of their torch.nn twins (so constructor arguments, attributes, repr and
``isinstance(m, torch.nn.GELU)`` are torch's by construction); only forward runs fastops."""


from torch import Tensor, nn

from .. import functional as F


class ReLU(nn.ReLU):
    """Drop-in for :class:`torch.nn.ReLU`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, inplace=self.inplace)


class GELU(nn.GELU):
    """Drop-in for :class:`torch.nn.GELU`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, approximate=self.approximate)


class SiLU(nn.SiLU):
    """Drop-in for :class:`torch.nn.SiLU`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input, inplace=self.inplace)


class LeakyReLU(nn.LeakyReLU):
    """Drop-in for :class:`torch.nn.LeakyReLU`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope, self.inplace)


class Sigmoid(nn.Sigmoid):
    """Drop-in for :class:`torch.nn.Sigmoid`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(nn.Tanh):
    """Drop-in for :class:`torch.nn.Tanh`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class ELU(nn.ELU):
    """Drop-in for :class:`torch.nn.ELU`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.elu(input, self.alpha, self.inplace)


class SELU(nn.SELU):
    """Drop-in for :class:`torch.nn.SELU`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.selu(input, self.inplace)


class CELU(nn.CELU):
    """Drop-in for :class:`torch.nn.CELU`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.celu(input, self.alpha, self.inplace)


class Softplus(nn.Softplus):
    """Drop-in for :class:`torch.nn.Softplus`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.softplus(input, self.beta, self.threshold)


class Mish(nn.Mish):
    """Drop-in for :class:`torch.nn.Mish`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.mish(input, inplace=self.inplace)


class Hardswish(nn.Hardswish):
    """Drop-in for :class:`torch.nn.Hardswish`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.hardswish(input, self.inplace)


class Hardsigmoid(nn.Hardsigmoid):
    """Drop-in for :class:`torch.nn.Hardsigmoid`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.hardsigmoid(input, self.inplace)


class Hardtanh(nn.Hardtanh):
    """Drop-in for :class:`torch.nn.Hardtanh`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)


class ReLU6(nn.ReLU6):
    """Drop-in for :class:`torch.nn.ReLU6` (torch's is a Hardtanh with min_val=0, max_val=6)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.hardtanh(input, self.min_val, self.max_val, self.inplace)


class GLU(nn.GLU):
    """Drop-in for :class:`torch.nn.GLU`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.glu(input, self.dim)


class Softmax(nn.Softmax):
    """Drop-in for :class:`torch.nn.Softmax`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.softmax(input, self.dim, _stacklevel=5)


class LogSoftmax(nn.LogSoftmax):
    """Drop-in for :class:`torch.nn.LogSoftmax`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.log_softmax(input, self.dim, _stacklevel=5)


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
