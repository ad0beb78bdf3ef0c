"""Smooth L1 loss on box regression targets (SSD's anchor deltas, beta 1.0)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._common import WeightedLoss

__all__ = ["SmoothL1Loss"]


class SmoothL1Loss(WeightedLoss):
    """``torch.nn.functional.smooth_l1_loss`` per element (0.5 d^2 / beta below beta, d - 0.5 beta above), reduced
    by :class:`WeightedLoss`."""

    hyper_parameters = ("beta",)

    def __init__(self, *, beta: float, loss_weight: float) -> None:
        if beta <= 0:
            raise ValueError(f"beta: must be > 0, got {beta}")
        super().__init__(loss_weight=loss_weight)
        self.beta = beta

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred``, ``target`` ``[M, K]`` -> ``[M, K]`` float32."""
        if pred.shape != target.shape:
            raise ValueError(f"SmoothL1Loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in "
                             f"shape")
        return F.smooth_l1_loss(pred.float(), target.float(), beta=self.beta, reduction="none")
