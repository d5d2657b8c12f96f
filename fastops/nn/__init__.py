"""Drop-in replacements for torch.nn modules (same constructor arguments and state_dict keys)."""

from .activations import ReLU

__all__ = ["ReLU"]

from .losses import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, MSELoss, SmoothL1Loss

__all__ += ["BCEWithLogitsLoss", "CrossEntropyLoss", "HuberLoss", "MSELoss", "SmoothL1Loss"]
