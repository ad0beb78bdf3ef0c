"""Max-IoU assignment (RetinaNet), batched over the images of a batch.

For every prior, its best GT by IoU decides: IoU >= ``pos_iou_thr`` -> positive; IoU < ``neg_iou_thr`` ->
negative; in between -> ignored (``gt_index == IGNORED``: neither positive nor negative, left out of the class
loss). Then, as mmdetection's ``MaxIoUAssigner(match_low_quality=True)``, every GT also claims the priors whose IoU
with it equals its highest IoU (if that is >= ``min_pos_iou`` and > 0), so that each GT has a positive: all of them
with ``gt_max_assign_all`` (RetinaNet), only the first (lowest index) without (SSD); a prior claimed so by several
GTs goes to the last of them. The ``> 0`` guard is ours: with mmdetection's ``min_pos_iou=0`` a GT overlapping no
prior would claim every prior of IoU 0 (or the first prior).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..box_coding import aligned_box_iou
from .base import AssignResult

__all__ = ["MaxIoUAssigner", "IGNORED"]

IGNORED = -2


class MaxIoUAssigner:
    """Batched max-IoU assigner (RetinaNet: pos_iou_thr 0.5, neg_iou_thr 0.4, min_pos_iou 0; SSD: 0.5, 0.5, 0 and
    gt_max_assign_all false)."""

    def __init__(self, *, pos_iou_thr: float, neg_iou_thr: float, min_pos_iou: float,
                 gt_max_assign_all: bool = True) -> None:
        if not 0 <= neg_iou_thr <= pos_iou_thr <= 1:
            raise ValueError(f"MaxIoUAssigner: need 0 <= neg_iou_thr <= pos_iou_thr <= 1, got {neg_iou_thr}, "
                             f"{pos_iou_thr}")
        self.pos_iou_thr, self.neg_iou_thr, self.min_pos_iou = pos_iou_thr, neg_iou_thr, min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all

    def __repr__(self) -> str:
        return (f"MaxIoUAssigner(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, "
                f"min_pos_iou={self.min_pos_iou}, gt_max_assign_all={self.gt_max_assign_all})")

    @torch.no_grad()
    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_valid: Tensor,
               prior_valid: Tensor | None = None) -> AssignResult:
        """priors [P, 4] xyxy px; gt_boxes [N, G, 4] xyxy px (padded); gt_valid [N, G]; prior_valid [N, P] or
        None -> AssignResult: gt_index [N, P] (-1 negative, IGNORED = -2 ignored), max_iou [N, P]."""
        num_images, num_gts = gt_boxes.shape[:2]
        if priors.dim() != 2 or priors.shape[1] != 4:
            raise ValueError(f"MaxIoUAssigner: priors must be [P, 4], got {tuple(priors.shape)}")
        if num_gts == 0:
            return AssignResult(gt_index=torch.full((num_images, priors.shape[0]), -1, dtype=torch.long,
                                                    device=priors.device),
                                max_iou=priors.new_zeros((num_images, priors.shape[0])))
        iou = aligned_box_iou(priors[None, :, None, :].float(), gt_boxes[:, None, :, :].float())  # [N, P, G]
        usable = gt_valid[:, None, :] if prior_valid is None else gt_valid[:, None, :] & prior_valid[:, :, None]
        iou = iou.masked_fill(~usable, -1.0)
        max_iou, best_gt = iou.max(dim=2)  # [N, P]
        gt_index = torch.where(max_iou >= self.pos_iou_thr, best_gt,
                               torch.where(max_iou < self.neg_iou_thr, -1, IGNORED))
        claim_index = self._low_quality_claims(iou, usable)
        gt_index = torch.where(claim_index >= 0, claim_index, gt_index)
        if prior_valid is not None:
            gt_index = gt_index.masked_fill(~prior_valid, -1)
        chosen_iou = iou.gather(2, gt_index.clamp(min=0)[:, :, None])[:, :, 0]
        return AssignResult(gt_index=gt_index, max_iou=torch.where(gt_index >= 0, chosen_iou, 0.0))

    def _low_quality_claims(self, iou: Tensor, usable: Tensor) -> Tensor:
        """iou [N, P, G] (-1 where not usable) -> [N, P] index of the last GT claiming each prior, -1 for none."""
        gt_best, first_prior = iou.max(dim=1, keepdim=True)  # [N, 1, G]: the highest IoU and its first prior
        can_claim = (gt_best >= self.min_pos_iou) & (gt_best > 0)
        gt_ids = torch.arange(iou.shape[2], device=iou.device).expand_as(gt_best)
        if self.gt_max_assign_all:
            claims = (iou == gt_best) & can_claim & usable
            return gt_ids.expand_as(claims).masked_fill(~claims, -1).max(dim=2).values
        claimant = gt_ids.masked_fill(~can_claim, -1)[:, 0]  # [N, G]
        claims = torch.full(iou.shape[:2], -1, dtype=torch.long, device=iou.device)
        return claims.scatter_reduce_(1, first_prior[:, 0], claimant, reduce="amax")
