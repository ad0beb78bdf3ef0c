"""L1 loss on box regression targets (RetinaNet's anchor deltas)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ._common import weighted_reduce

__all__ = ["L1Loss"]


class L1Loss(nn.Module):
    """``loss_weight * sum(|pred - target| * weight) / avg_factor`` over all elements (float32)."""

    def __init__(self, *, loss_weight: float) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[float | Tensor] = None) -> Tensor:
        """``pred``, ``target`` ``[M, K]``; ``weight`` broadcastable -> scalar."""
        if pred.shape != target.shape:
            raise ValueError(f"L1Loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        return weighted_reduce((pred.float() - target.float()).abs(), weight, avg_factor, self.loss_weight)

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}"
