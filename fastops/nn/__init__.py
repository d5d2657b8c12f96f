"""Drop-in replacements for torch.nn modules (same constructor arguments and state_dict keys)."""

from .activations import GELU, GeGLU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, SwiGLU, Tanh
from .convert import convert
from .linear import Linear, LinearAct
from .losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    LinearCrossEntropyLoss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)

__all__ = [
    "GELU",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "GeGLU",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
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
