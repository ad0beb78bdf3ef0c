"""Sigmoid focal loss (RetinaNet) for integer labels: a wrapper over ``torchvision.ops.sigmoid_focal_loss``."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from ._common import check_class_inputs, soft_one_hot, weighted_reduce


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


class FocalLoss(nn.Module):
    """:func:`focal_loss` reduced to a scalar: ``loss_weight * sum(loss * weight) / avg_factor``
    (mean over samples when ``avg_factor`` is None)."""

    def __init__(self, *, alpha: float, gamma: float, loss_weight: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.loss_weight = loss_weight

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weight: Optional[Tensor] = None,
        avg_factor: Optional[float | Tensor] = None,
    ) -> Tensor:
        """``logits [N, C]``, ``labels [N]`` (C = background), ``weight [N]`` -> scalar."""
        loss = focal_loss(logits, labels, alpha=self.alpha, gamma=self.gamma)
        return weighted_reduce(loss, weight, avg_factor, self.loss_weight)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, loss_weight={self.loss_weight}"
