"""Binary cross-entropy on logits against targets in [0, 1]: the separate quality branch of ATSS / FCOS
(centerness or IoU predicted on positives, multiplied into the class score at test time)."""
from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from ._common import WeightedLoss

__all__ = ["BinaryCrossEntropyLoss"]


class BinaryCrossEntropyLoss(WeightedLoss):
    """BCE(sigmoid(logits), target) per element reduced to a scalar (:class:`WeightedLoss`; ``weight [M]``)."""

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [M]`` (before sigmoid), ``target [M]`` in [0, 1] -> ``[M]`` float32."""
        if logits.shape != target.shape:
            raise ValueError(f"BinaryCrossEntropyLoss: logits {tuple(logits.shape)} and target "
                             f"{tuple(target.shape)} differ in shape")
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
