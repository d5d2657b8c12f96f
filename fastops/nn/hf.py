"""fastops twins of Hugging Face transformers layers.

transformers is optional, so the classes are built on first use (``fastops.nn.hf.Conv1D`` imports transformers);
pickle finds them by name through the module ``__getattr__``.
"""

from __future__ import annotations

from torch import Tensor

from .. import functional as F


def _conv1d_class() -> type:
    from transformers.pytorch_utils import Conv1D as HFConv1D

    class Conv1D(HFConv1D):
        """transformers' Conv1D (GPT-2's projections: ``addmm(bias, x, weight)`` with an [in, out] weight) on
        fastops: ``linear(x, weight.T, bias)``, the GEMM reading the transposed view of the weight in place. The
        parameters, init and state_dict are Conv1D's own; it *is* a transformers Conv1D for isinstance checks. ``activation``
        (None, or one of fastops.functional.LINEAR_ACTIVATIONS, set by ``convert(fuse=True)``) is applied in the
        same fused pass as the bias."""

        activation: str | None = None

        def forward(self, x: Tensor) -> Tensor:
            return F.linear(x, self.weight.mT, self.bias, activation=self.activation)

        def __repr__(self) -> str:
            act = f", activation={self.activation!r}" if self.activation else ""
            return f"Conv1D(nf={self.nf}, nx={self.nx}{act})"

    Conv1D.__module__, Conv1D.__qualname__ = __name__, "Conv1D"
    return Conv1D


def __getattr__(name: str):
    if name == "Conv1D":
        cls = globals()["Conv1D"] = _conv1d_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
