"""Drop-in replacements for torch.nn modules (same constructor arguments and state_dict keys)."""

from .activations import ReLU
from .linear import Linear

__all__ = ["ReLU", "Linear"]
