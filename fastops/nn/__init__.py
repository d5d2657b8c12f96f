"""Drop-in replacements for torch.nn modules (same constructor arguments and state_dict keys)."""

from .activations import ReLU

__all__ = ["ReLU"]
