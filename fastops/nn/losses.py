"""Loss modules: subclasses of the torch.nn losses, so constructor arguments, attributes, buffers (the class
``weight``, ``pos_weight``) and state_dict keys are torch's by construction; only forward runs fastops."""

from torch import Tensor, nn

from .. import functional as F


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Drop-in for :class:`torch.nn.CrossEntropyLoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class MSELoss(nn.MSELoss):
    """Drop-in for :class:`torch.nn.MSELoss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


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
