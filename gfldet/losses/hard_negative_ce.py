"""Softmax cross-entropy with hard negative mining (SSD, Liu et al. 2016; mmdetection's ``SSDHead`` loss).

Per image: every positive prior, plus the ``neg_pos_ratio x num_pos`` negatives with the highest cross-entropy
(at most all of them); an image without positives contributes nothing. Written here because neither torch nor
torchvision has the mining step; it is batched (one sort per image row, no loop over images).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import WeightedLoss

__all__ = ["HardNegativeCrossEntropyLoss"]


class HardNegativeCrossEntropyLoss(WeightedLoss):
    """Softmax CE over ``C + 1`` classes (background = C, the last channel) on positives and mined negatives."""

    hyper_parameters = ("neg_pos_ratio",)

    def __init__(self, *, neg_pos_ratio: float, loss_weight: float) -> None:
        if neg_pos_ratio < 0:
            raise ValueError(f"neg_pos_ratio: must be >= 0, got {neg_pos_ratio}")
        super().__init__(loss_weight=loss_weight)
        self.neg_pos_ratio = neg_pos_ratio

    def per_sample(self, logits: Tensor, labels: Tensor, eligible: Tensor) -> Tensor:
        """logits [N, P, C+1], labels [N, P] int64 (C = background), eligible [N, P] bool (priors that may count:
        valid, not ignored) -> [N, P] float32 cross-entropy of the selected priors, 0 elsewhere."""
        if logits.dim() != 3 or labels.shape != logits.shape[:2] or eligible.shape != labels.shape:
            raise ValueError(f"HardNegativeCrossEntropyLoss: expected logits [N, P, C+1], labels and eligible "
                             f"[N, P], got {tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(eligible.shape)}")
        background = logits.shape[2] - 1
        ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
        positive = eligible & (labels < background)
        negative = eligible & (labels == background)
        num_neg = torch.minimum(positive.sum(dim=1) * self.neg_pos_ratio, negative.sum(dim=1)).floor()  # [N]
        # rank of each negative by decreasing loss within its image (non-negatives rank last)
        order = ce.detach().masked_fill(~negative, -1.0).argsort(dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device)
                                                .expand_as(order))
        hard = negative & (rank < num_neg[:, None])
        return ce * (positive | hard)
