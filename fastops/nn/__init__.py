"""Drop-in replacements for torch.nn modules (same constructor arguments and state_dict keys)."""

from .activations import ReLU
from .convert import convert

__all__ = ["ReLU", "convert"]
