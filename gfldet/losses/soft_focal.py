"""Sigmoid focal loss against *soft* class targets: the "centerness-/IoU-guided" rows of GFL's Table 1(a).

The target of the labelled class is a quality score in [0, 1] (centerness or IoU) instead of 1; the loss is the
standard focal loss ``alpha_t * (1 - p_t)^gamma * BCE`` of ``torchvision.ops.sigmoid_focal_loss``, which accepts
float targets (p_t = p * y + (1 - p) * (1 - y)). Unlike Quality Focal Loss, its modulating factor is not
``|y - p|^beta``, which is the point of the comparison in the paper.
"""
from __future__ import annotations

from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from ._common import WeightedLoss, check_class_inputs, soft_one_hot

__all__ = ["soft_focal_loss", "SoftFocalLoss"]


def soft_focal_loss(logits: Tensor, labels: Tensor, scores: Tensor, alpha: float = 0.25,
                    gamma: float = 2.0) -> Tensor:
    """Per-sample focal loss with target ``scores[i]`` on class ``labels[i]`` and 0 elsewhere, float32.

    Args:
        logits: ``[N, C]`` class logits; labels: ``[N]`` int64 in ``[0, C]`` (C = background);
        scores: ``[N]`` soft targets in ``[0, 1]`` (ignored for background); alpha, gamma: as torchvision's.

    Returns:
        ``[N]`` loss summed over classes.
    """
    check_class_inputs("soft_focal_loss", logits, labels)
    if scores.shape != labels.shape:
        raise ValueError(f"soft_focal_loss: scores must be [N] like labels, got {tuple(scores.shape)}")
    logits = logits.float()
    target = soft_one_hot(labels, scores.float(), logits.shape[1])
    return sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="none").sum(dim=1)


class SoftFocalLoss(WeightedLoss):
    """:func:`soft_focal_loss` reduced to a scalar (:class:`WeightedLoss`); same inputs as QualityFocalLoss."""

    hyper_parameters = ("alpha", "gamma")

    def __init__(self, *, alpha: float, gamma: float, loss_weight: float) -> None:
        super().__init__(loss_weight=loss_weight)
        self.alpha, self.gamma = alpha, gamma

    def per_sample(self, logits: Tensor, labels: Tensor, scores: Tensor) -> Tensor:
        """``logits [N, C]``, ``labels [N]`` (C = background), ``scores [N]`` -> ``[N]``."""
        return soft_focal_loss(logits, labels, scores, alpha=self.alpha, gamma=self.gamma)
