"""Distribution Focal Loss (GFL, Li et al. 2020): pushes a discrete distribution's mass onto the two bins
around a continuous target."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from ._common import WeightedLoss


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample Distribution Focal Loss.

    With ``y_l = floor(y)`` and ``y_r = y_l + 1``:
    ``loss = CE(logits, y_l) * (y_r - y) + CE(logits, y_r) * (y - y_l)``, computed in float32.

    Args:
        logits: ``[M, n + 1]`` logits over the bins ``{0, ..., n}`` (one row per box side).
        target: ``[M]`` float target in bin units, in ``[0, n)`` (clamp it first, e.g. with
            :func:`gfldet.box_coding.bbox2distance`'s ``max_dist``); values outside make
            ``cross_entropy`` fail on the out-of-range class index.

    Returns:
        ``[M]`` float32 loss per sample (no reduction).
    """
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"distribution_focal_loss: expected logits [M, n+1] and target [M], "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    logits, target = logits.float(), target.float()
    left = target.long()
    right = left + 1
    weight_left = right.float() - target
    weight_right = target - left.float()
    return (
        F.cross_entropy(logits, left, reduction="none") * weight_left
        + F.cross_entropy(logits, right, reduction="none") * weight_right
    )


class DistributionFocalLoss(WeightedLoss):
    """:func:`distribution_focal_loss` reduced to a scalar (:class:`WeightedLoss`; ``weight [M]``)."""

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [M, n+1]``, ``target [M]`` in bin units -> ``[M]``."""
        return distribution_focal_loss(logits, target)
