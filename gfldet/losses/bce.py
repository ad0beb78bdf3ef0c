"""Binary cross-entropy on logits against targets in [0, 1]: the separate quality branch of ATSS / FCOS
(centerness or IoU predicted on positives, multiplied into the class score at test time)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn
from torch.nn import functional as F

from ._common import weighted_reduce

__all__ = ["BinaryCrossEntropyLoss"]


class BinaryCrossEntropyLoss(nn.Module):
    """``loss_weight * sum(BCE(sigmoid(logits), target) * weight) / avg_factor`` (float32)."""

    def __init__(self, *, loss_weight: float) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, logits: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[float | Tensor] = None) -> Tensor:
        """``logits [M]`` (before sigmoid), ``target [M]`` in [0, 1], ``weight [M]`` -> scalar."""
        if logits.shape != target.shape:
            raise ValueError(f"BinaryCrossEntropyLoss: logits {tuple(logits.shape)} and target "
                             f"{tuple(target.shape)} differ in shape")
        loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        return weighted_reduce(loss, weight, avg_factor, self.loss_weight)

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}"
