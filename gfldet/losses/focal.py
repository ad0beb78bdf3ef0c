"""Sigmoid focal loss (RetinaNet) for integer labels: a wrapper over ``torchvision.ops.sigmoid_focal_loss``."""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from ._common import WeightedLoss, check_class_inputs, soft_one_hot


def focal_loss(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Per-sample sigmoid focal loss against one-hot targets, computed in float32.

    Args:
        logits: ``[N, C]`` class logits (before sigmoid).
        labels: ``[N]`` int64 class indices in ``[0, C]``; ``C`` (or any value outside ``[0, C)``) = background.
        alpha: weight of the positive entries (``1 - alpha`` for negatives); a negative value disables it,
            as in torchvision.
        gamma: focusing exponent.

    Returns:
        ``[N]`` float32 loss per sample, summed over classes (no reduction over samples).
    """
    check_class_inputs("focal_loss", logits, labels)
    logits = logits.float()
    target = soft_one_hot(labels, logits.new_ones(labels.shape), logits.shape[1])
    return sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="none").sum(dim=1)


class FocalLoss(WeightedLoss):
    """:func:`focal_loss` reduced to a scalar (:class:`WeightedLoss`; ``weight [N]``)."""

    hyper_parameters = ("alpha", "gamma")

    def __init__(self, *, alpha: float, gamma: float, loss_weight: float) -> None:
        super().__init__(loss_weight=loss_weight)
        self.alpha, self.gamma = alpha, gamma

    def per_sample(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``logits [N, C]``, ``labels [N]`` (C = background) -> ``[N]``."""
        return focal_loss(logits, labels, alpha=self.alpha, gamma=self.gamma)
