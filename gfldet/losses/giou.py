"""Generalized IoU loss: a weighted wrapper over ``torchvision.ops.generalized_box_iou_loss``."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from ._common import weighted_reduce


def giou_loss(pred_xyxy: Tensor, target_xyxy: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-box ``1 - GIoU(pred, target)``, computed in float32.

    Args:
        pred_xyxy: ``[M, 4]`` predicted boxes, xyxy.
        target_xyxy: ``[M, 4]`` target boxes, xyxy, same units as ``pred_xyxy`` (any units: GIoU is scale free).
        eps: torchvision's guard added to the union and enclosing area (mmdetection clamps them to eps instead;
            the two agree to ~eps / area).

    Returns:
        ``[M]`` loss in ``[0, 2]``.
    """
    if pred_xyxy.shape != target_xyxy.shape or pred_xyxy.shape[-1:] != (4,):
        raise ValueError(
            f"giou_loss: expected two [M, 4] xyxy tensors, got {tuple(pred_xyxy.shape)} and {tuple(target_xyxy.shape)}"
        )
    return generalized_box_iou_loss(pred_xyxy.float(), target_xyxy.float(), reduction="none", eps=eps)


class GIoULoss(nn.Module):
    """:func:`giou_loss` reduced to a scalar: ``loss_weight * sum(loss * weight) / avg_factor``
    (mean over boxes when ``avg_factor`` is None)."""

    def __init__(self, *, loss_weight: float, eps: float = 1e-7) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.eps = eps

    def forward(
        self,
        pred_xyxy: Tensor,
        target_xyxy: Tensor,
        weight: Optional[Tensor] = None,
        avg_factor: Optional[float | Tensor] = None,
    ) -> Tensor:
        """``pred_xyxy [M, 4]``, ``target_xyxy [M, 4]``, ``weight [M]`` -> scalar."""
        loss = giou_loss(pred_xyxy, target_xyxy, eps=self.eps)
        return weighted_reduce(loss, weight, avg_factor, self.loss_weight)

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, eps={self.eps}"
