"""Drop-in replacements for torch.nn modules (same constructor arguments and state_dict keys)."""

from .activations import GELU, GeGLU, LeakyReLU, ReLU, Sigmoid, SiLU, SwiGLU, Tanh
from .convert import convert

__all__ = ["GELU", "GeGLU", "LeakyReLU", "ReLU", "SiLU", "Sigmoid", "SwiGLU", "Tanh", "convert"]
