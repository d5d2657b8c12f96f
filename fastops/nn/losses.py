"""Loss modules: subclasses of the torch.nn losses, so constructor arguments, attributes, buffers (the class
``weight``, ``pos_weight``) and state_dict keys are torch's by construction; only forward runs fastops."""

import math

import torch
from torch import Tensor, nn

from .. import functional as F
from ..ops.linear_cross_entropy import linear_cross_entropy_loss
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


class KLDivLoss(nn.KLDivLoss):
    """Drop-in for :class:`torch.nn.KLDivLoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


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


class _HeadLinear(Linear):
    """LinearCrossEntropyLoss's ``linear``: a fastops.nn.Linear (parameters, init, state_dict keys and repr
    ``Linear(...)`` as torch's) whose own forward, which the loss never calls but torch.jit.script compiles, is
    written in TorchScript."""

    def forward(self, input: Tensor) -> Tensor:
        return torch.ops.fastops.linear(input, self.weight, self.bias)

    def _get_name(self) -> str:
        return "Linear"


class LinearCrossEntropyLoss(nn.modules.loss._WeightedLoss):
    """Drop-in for torch 2.13's :class:`torch.nn.LinearCrossEntropyLoss` (available here on any torch): a
    ``linear`` submodule (a fastops :class:`~fastops.nn.Linear`, so the state_dict keys are ``linear.weight`` /
    ``linear.bias``, plus the class ``weight`` buffer) whose logits go straight into cross entropy without being
    held in memory; see :func:`fastops.functional.linear_cross_entropy`. Constructor, attributes, repr and state_dict
    are torch's; ``torch.jit.script`` compiles it (with ``options=None``, as torch's) and ``torch.jit.trace`` records
    fastops' operators, so saved models load wherever fastops is imported."""

    # As torch's: options is not a constant (an options object is not scriptable).
    __constants__ = ("num_classes", "out_features", "reduction", "ignore_index", "label_smoothing")
    num_classes: int
    out_features: tuple[int, ...]
    reduction: str
    ignore_index: int | None
    label_smoothing: float

    def __init__(self, in_features: int, num_classes: int, *, out_features: tuple[int, ...] = (), bias: bool = False,
                 device=None, dtype=None, reduction: str = "mean", weight: Tensor | None = None,
                 ignore_index: int | None = None, label_smoothing: float = 0.0, options=None) -> None:
        if weight is not None and weight.shape != (num_classes,):
            raise RuntimeError(f"expected weight shape to be {(num_classes,)}, got {tuple(weight.shape)}")
        if label_smoothing < 0 or label_smoothing > 1.0:
            raise RuntimeError(f"expected label_smoothing to be in range [0, 1], got {label_smoothing}")
        super().__init__(weight=weight, reduction=reduction)
        self.num_classes = num_classes
        self.out_features = out_features
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.linear = _HeadLinear(in_features, math.prod(out_features, start=num_classes), bias=bias, device=device,
                                  dtype=dtype)
        self.options = options

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        linear_weight = self.linear.weight.reshape((self.num_classes, *self.out_features, self.linear.in_features))
        linear_bias = (self.linear.bias.reshape((self.num_classes, *self.out_features))
                       if self.linear.bias is not None else None)
        if torch.jit.is_scripting():  # torch's options do not script; autocast is eager-only here
            return linear_cross_entropy_loss(input, linear_weight, target, linear_bias, self.weight, self.reduction,
                                             self.ignore_index, self.label_smoothing, None, False)
        return F.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias, weight=self.weight,
                                      reduction=self.reduction, ignore_index=self.ignore_index,
                                      label_smoothing=self.label_smoothing, options=self.options)

    def extra_repr(self) -> str:
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
                f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, options={self.options}")
