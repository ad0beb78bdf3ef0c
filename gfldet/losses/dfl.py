"""Distribution Focal Loss (GFL, Li et al. 2020): pushes a discrete distribution's mass onto the two bins
around a continuous target."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn
from torch.nn import functional as F

from ._common import weighted_reduce


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


class DistributionFocalLoss(nn.Module):
    """:func:`distribution_focal_loss` reduced to a scalar: ``loss_weight * sum(loss * weight) / avg_factor``
    (mean over samples when ``avg_factor`` is None)."""

    def __init__(self, *, loss_weight: float) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        weight: Optional[Tensor] = None,
        avg_factor: Optional[float | Tensor] = None,
    ) -> Tensor:
        """``logits [M, n+1]``, ``target [M]``, ``weight [M]`` -> scalar."""
        return weighted_reduce(distribution_focal_loss(logits, target), weight, avg_factor, self.loss_weight)

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}"
