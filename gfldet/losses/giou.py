"""Generalized IoU loss of aligned box pairs, and its weighted module.

The arithmetic is ``torchvision.ops.generalized_box_iou_loss``'s, operation for operation (values and gradients
equal bit for bit; tested on the CPU), but written here: torchvision fills the intersection through a boolean
mask, and each boolean-mask indexing waits for the GPU (5 host synchronisations per call, on every training step);
``torch.where`` on the same mask needs none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import WeightedLoss


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
    x1, y1, x2, y2 = pred_xyxy.float().unbind(dim=-1)
    x1g, y1g, x2g, y2g = target_xyxy.float().unbind(dim=-1)
    left, top, right, bottom = torch.max(x1, x1g), torch.max(y1, y1g), torch.min(x2, x2g), torch.min(y2, y2g)
    overlaps = (bottom > top) & (right > left)
    intersection = torch.where(overlaps, (right - left) * (bottom - top), 0.0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intersection
    iou = intersection / (union + eps)
    enclosing = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    return 1 - (iou - (enclosing - union) / (enclosing + eps))


class GIoULoss(WeightedLoss):
    """:func:`giou_loss` reduced to a scalar (:class:`WeightedLoss`; ``weight [M]``)."""

    hyper_parameters = ("eps",)

    def __init__(self, *, loss_weight: float, eps: float = 1e-7) -> None:
        super().__init__(loss_weight=loss_weight)
        self.eps = eps

    def per_sample(self, pred_xyxy: Tensor, target_xyxy: Tensor) -> Tensor:
        """``pred_xyxy [M, 4]``, ``target_xyxy [M, 4]`` (same units) -> ``[M]``."""
        return giou_loss(pred_xyxy, target_xyxy, eps=self.eps)
