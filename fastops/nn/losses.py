"""Loss modules: subclasses of the torch.nn losses, so constructor arguments, attributes, buffers (the class
``weight``, ``pos_weight``) and state_dict keys are torch's by construction; only forward runs fastops."""

import math

from torch import Tensor, nn

from .. import functional as F
from .linear import Linear


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Drop-in for :class:`torch.nn.CrossEntropyLoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(nn.NLLLoss):
    """Drop-in for :class:`torch.nn.NLLLoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class MSELoss(nn.MSELoss):
    """Drop-in for :class:`torch.nn.MSELoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(nn.L1Loss):
    """Drop-in for :class:`torch.nn.L1Loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)


class BCELoss(nn.BCELoss):
    """Drop-in for :class:`torch.nn.BCELoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class SmoothL1Loss(nn.SmoothL1Loss):
    """Drop-in for :class:`torch.nn.SmoothL1Loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(nn.HuberLoss):
    """Drop-in for :class:`torch.nn.HuberLoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """Drop-in for :class:`torch.nn.BCEWithLogitsLoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight, pos_weight=self.pos_weight,
                                                  reduction=self.reduction)


class LinearCrossEntropyLoss(nn.modules.loss._WeightedLoss):
    """Drop-in for torch 2.13's :class:`torch.nn.LinearCrossEntropyLoss` (available here on any torch): a
    ``linear`` submodule (fastops :class:`~fastops.nn.Linear`, so the state_dict keys are ``linear.weight`` /
    ``linear.bias``, plus the class ``weight`` buffer) whose logits go straight into cross entropy without being
    held in memory; see :func:`fastops.functional.linear_cross_entropy`."""

    def __init__(self, in_features: int, num_classes: int, *, out_features: tuple[int, ...] = (), bias: bool = False,
                 device=None, dtype=None, reduction: str = "mean", weight: Tensor | None = None,
                 ignore_index: int | None = None, label_smoothing: float = 0.0, options=None) -> None:
        if weight is not None and weight.shape != (num_classes,):
            raise RuntimeError(f"expected weight shape to be {(num_classes,)}, got {tuple(weight.shape)}")
        if label_smoothing < 0 or label_smoothing > 1.0:
            raise RuntimeError(f"expected label_smoothing to be in range [0, 1], got {label_smoothing}")
        super().__init__(weight=weight, reduction=reduction)
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.options = options
        self.linear = Linear(in_features, math.prod(self.out_features, start=num_classes), bias=bias, device=device,
                             dtype=dtype)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        weight = self.linear.weight.reshape(self.num_classes, *self.out_features, self.linear.in_features)
        bias = self.linear.bias.reshape(self.num_classes, *self.out_features) if self.linear.bias is not None else None
        return F.linear_cross_entropy(input, weight, target, linear_bias=bias, weight=self.weight,
                                      reduction=self.reduction, ignore_index=self.ignore_index,
                                      label_smoothing=self.label_smoothing, options=self.options)

    def extra_repr(self) -> str:
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
                f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}")
