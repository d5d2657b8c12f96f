"""Drop-in replacements for torch.nn modules (same constructor arguments and state_dict keys)."""

from .activations import GELU, GeGLU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, SwiGLU, Tanh
from .convert import convert
from .linear import Linear, LinearAct
from .losses import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    LinearCrossEntropyLoss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)

__all__ = [
    "GELU",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "GeGLU",
    "HuberLoss",
    "LeakyReLU",
    "Linear",
    "LinearAct",
    "LinearCrossEntropyLoss",
    "LogSoftmax",
    "MSELoss",
    "NLLLoss",
    "ReLU",
    "SiLU",
    "Sigmoid",
    "SmoothL1Loss",
    "Softmax",
    "SwiGLU",
    "Tanh",
    "convert",
]
