"""GFL head (Li et al. 2020): joint class-quality scores (QFL) and general box distributions (DFL + GIoU).

Losses reproduce mmdetection 3.3's ``GFLHead.loss_by_feat`` with all levels and images fused into one batched
computation (sums over levels are unchanged by the fusion). All regression quantities are in *stride units* of the
prior's level: prior centre / stride, GT box / stride, distances over bins {0, ..., reg_max}.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from gfldet.box_coding import aligned_box_iou, distance2bbox, integral_bins, integral_distance
from gfldet.models.heads.box_repr import side_weighted_dfl
from gfldet.models.heads.dense_head import DenseHead
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.targets import max_class_score, weight_normaliser

__all__ = ["GFLHead"]


class GFLHead(DenseHead):
    """Dense head predicting per level cls logits [N, C, H, W] and 4*(reg_max+1) distribution logits [N, R, H, W].

    reg_max: distances are distributions over bins {0..reg_max} (stride units); dfl_target_eps: DFL targets are
    clamped to [0, reg_max - dfl_target_eps] (0.1 in mmdetection 3.3 and GFocal). ``assigner`` must offer
    ``assign(anchors_px, num_per_level, gt_boxes, gt_valid, prior_valid, *, level_grids) -> AssignResult``
    (e.g. ATSSAssigner; DenseHead.assign);
    ``loss_cls`` is QualityFocalLoss-like, ``loss_bbox`` GIoULoss-like, ``loss_dfl`` DistributionFocalLoss-like
    (each ``forward(..., weight, avg_factor)``). See DenseHead for the tower arguments.
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int], feat_channels: int,
                 stacked_convs: int, norm_groups: int, init_std: float, prior_prob: float, octave_base_scale: float,
                 pad_size_divisor: int, reg_max: int, dfl_target_eps: float, assigner, loss_cls: nn.Module,
                 loss_bbox: nn.Module, loss_dfl: nn.Module, test_cfg: PostProcessConfig) -> None:
        if reg_max < 1:
            raise ValueError(f"reg_max: must be an integer >= 1 (distances over bins 0..reg_max), got {reg_max}")
        self.reg_max = reg_max
        super().__init__(num_classes=num_classes, in_channels=in_channels, strides=strides,
                         feat_channels=feat_channels, stacked_convs=stacked_convs, norm_groups=norm_groups,
                         init_std=init_std, prior_prob=prior_prob, octave_base_scale=octave_base_scale,
                         pad_size_divisor=pad_size_divisor, test_cfg=test_cfg)
        self.dfl_target_eps = dfl_target_eps
        self.assigner = assigner
        self.loss_cls, self.loss_bbox, self.loss_dfl = loss_cls, loss_bbox, loss_dfl
        self.register_buffer("bins", integral_bins(reg_max), persistent=False)

    @property
    def reg_channels(self) -> int:
        return 4 * (self.reg_max + 1)

    def decode_distances(self, reg: torch.Tensor) -> torch.Tensor:
        """Distribution logits [..., 4*(reg_max+1)] -> expected ltrb distances [..., 4] (stride units)."""
        return integral_distance(reg, self.bins)

    def loss(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
             gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor],
             image_sizes: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """Training losses of a batch.

        cls_scores / bbox_preds: per level [N, C, H_l, W_l] / [N, 4*(reg_max+1), H_l, W_l] (``forward``'s output);
        gt_boxes: per image [G_i, 4] xyxy px in resized-image coordinates; gt_labels: per image [G_i] int64 in
        0..C-1; image_sizes: (h, w) of each resized image before batch padding.
        Returns {'loss_cls', 'loss_bbox', 'loss_dfl'} scalars (each the sum over levels that mmdetection reports):
        QFL over valid priors (soft target: IoU of the detached decoded box on positives, else 0), GIoU and DFL over
        positives weighted by their max class score.
        """
        targets = self.build_targets(cls_scores, gt_boxes, gt_labels, image_sizes)
        cls_logits, reg_logits = self.flat_logits(cls_scores, bbox_preds)  # [N, P, C], [N, P, 4(n+1)]
        pos_reg = targets.positives(reg_logits)  # [M, 4(n+1)]
        pred_boxes = distance2bbox(targets.centers, self.decode_distances(pos_reg))  # [M, 4] xyxy stride units
        quality = targets.scatter(aligned_box_iou(pred_boxes.detach(), targets.target_boxes))
        loss_cls = self.classification_loss(cls_logits, targets, quality)
        pos_weight = max_class_score(targets.positives(cls_logits))  # [M]
        weight_sum = weight_normaliser(pos_weight)
        loss_bbox = self.loss_bbox(pred_boxes, targets.target_boxes, weight=pos_weight, avg_factor=weight_sum)
        target_bins = targets.target_ltrb.clamp(min=0, max=self.reg_max - self.dfl_target_eps)
        loss_dfl = side_weighted_dfl(self.loss_dfl, pos_reg, target_bins, pos_weight, weight_sum)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_dfl": loss_dfl}
