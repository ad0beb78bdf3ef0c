"""L1 loss on box regression targets (RetinaNet's anchor deltas)."""
from __future__ import annotations

from torch import Tensor

from ._common import WeightedLoss

__all__ = ["L1Loss"]


class L1Loss(WeightedLoss):
    """``|pred - target|`` per element reduced to a scalar (:class:`WeightedLoss`; ``weight`` broadcastable)."""

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred``, ``target`` ``[M, K]`` -> ``[M, K]`` float32."""
        if pred.shape != target.shape:
            raise ValueError(f"L1Loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        return (pred.float() - target.float()).abs()
