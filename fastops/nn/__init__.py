"""Drop-in replacements for torch.nn modules (same constructor arguments and state_dict keys)."""

from .activations import ReLU

__all__ = ["ReLU"]

from .losses import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, MSELoss, SmoothL1Loss  # noqa: E402

__all__ += ["CrossEntropyLoss", "MSELoss", "SmoothL1Loss", "HuberLoss", "BCEWithLogitsLoss"]
