"""GFL head (Li et al. 2020): joint class-quality scores (QFL) and general box distributions (DFL + GIoU).

Losses reproduce mmdetection 3.3's ``GFLHead.loss_by_feat`` with all levels and images fused into one batched
computation (sums over levels are unchanged by the fusion). All regression quantities are in *stride units* of the
prior's level: prior centre / stride, GT box / stride, distances over bins {0, ..., reg_max}.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from gfldet.assigners import AssignResult, pad_gt_boxes
from gfldet.box_coding import aligned_box_iou, bbox2distance, distance2bbox, integral_bins, integral_distance
from gfldet.models.heads.dense_head import DenseHead, flatten_levels, mean_over_processes
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.priors import Priors

__all__ = ["GFLHead"]


class GFLHead(DenseHead):
    """Dense head predicting per level cls logits [N, C, H, W] and 4*(reg_max+1) distribution logits [N, R, H, W].

    reg_max: distances are distributions over bins {0..reg_max} (stride units); dfl_target_eps: DFL targets are
    clamped to [0, reg_max - dfl_target_eps] (0.1 in mmdetection 3.3 and GFocal). ``assigner`` must offer
    ``assign(anchors_px, num_per_level, gt_boxes, gt_valid, prior_valid, *, level_grids) -> AssignResult`` (e.g. ATSSAssigner);
    ``loss_cls`` is QualityFocalLoss-like, ``loss_bbox`` GIoULoss-like, ``loss_dfl`` DistributionFocalLoss-like
    (each ``forward(..., weight, avg_factor)``). See DenseHead for the tower arguments.
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int], feat_channels: int,
                 stacked_convs: int, norm_groups: int, init_std: float, prior_prob: float, octave_base_scale: float,
                 pad_size_divisor: int, reg_max: int, dfl_target_eps: float, assigner, loss_cls: nn.Module,
                 loss_bbox: nn.Module, loss_dfl: nn.Module, test_cfg: PostProcessConfig) -> None:
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
        Returns {'loss_cls', 'loss_bbox', 'loss_dfl'} scalars (each the sum over levels that mmdetection reports).
        """
        self.check_batch(cls_scores, gt_boxes=gt_boxes, gt_labels=gt_labels, image_sizes=image_sizes)
        priors = self.priors_for(cls_scores)
        cls_logits = flatten_levels(cls_scores).float()  # [N, P, C] (float32 also under autocast)
        reg_logits = flatten_levels(bbox_preds)  # [N, P, 4(n+1)]
        prior_valid = self.prior_generator.valid_flags(priors, image_sizes, pad_size_divisor=self.pad_size_divisor)
        boxes, labels, gt_valid = pad_gt_boxes(list(gt_boxes), list(gt_labels))
        assignment = self.assigner.assign(priors.anchors_px, priors.num_per_level, boxes, gt_valid, prior_valid,
                                          level_grids=priors.level_grids)
        return self._losses(cls_logits, reg_logits, priors, prior_valid, assignment, boxes, labels)

    def _losses(self, cls_logits: torch.Tensor, reg_logits: torch.Tensor, priors: Priors, prior_valid: torch.Tensor,
                assignment: AssignResult, boxes: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """QFL over valid priors, GIoU and DFL over positives, from flattened outputs [N, P, .] and an assignment
        of padded GTs (boxes [N, G, 4] xyxy px, labels [N, G])."""
        target_labels = assignment.gather(labels, fill=self.num_classes)  # [N, P], C = background
        pos_img, pos_prior = assignment.positive.nonzero(as_tuple=True)
        stride = priors.strides[pos_prior][:, None]
        centers = priors.centers_px[pos_prior] / stride  # [M, 2] stride units
        target_boxes = assignment.gather(boxes, fill=0)[pos_img, pos_prior] / stride  # [M, 4] xyxy stride units
        pos_reg = reg_logits[pos_img, pos_prior]  # [M, 4(n+1)]
        pred_boxes = distance2bbox(centers, self.decode_distances(pos_reg))  # [M, 4] xyxy stride units
        pos_weight = cls_logits[pos_img, pos_prior].detach().sigmoid().max(dim=1).values  # [M]
        quality = torch.zeros_like(prior_valid, dtype=cls_logits.dtype)  # QFL target: IoU on positives, else 0
        quality[pos_img, pos_prior] = aligned_box_iou(pred_boxes.detach(), target_boxes)

        # mmdetection 3.3 counts at least one positive per image (SamplingResult.num_pos = max(num_pos, 1))
        pos_per_image = assignment.positive.sum(dim=1).clamp(min=1)
        num_pos = mean_over_processes(pos_per_image.sum().to(cls_logits.dtype)).clamp(min=1)
        loss_cls = self.loss_cls(cls_logits.reshape(-1, self.num_classes), target_labels.reshape(-1),
                                 quality.reshape(-1), weight=prior_valid.reshape(-1).to(cls_logits.dtype),
                                 avg_factor=num_pos)
        weight_sum = mean_over_processes(pos_weight.sum()).clamp(min=1)
        loss_bbox = self.loss_bbox(pred_boxes, target_boxes, weight=pos_weight, avg_factor=weight_sum)
        target_ltrb = bbox2distance(centers, target_boxes, self.reg_max, self.dfl_target_eps)
        loss_dfl = self.loss_dfl(pos_reg.reshape(-1, self.reg_max + 1), target_ltrb.reshape(-1),
                                 weight=pos_weight[:, None].expand(-1, 4).reshape(-1), avg_factor=4 * weight_sum)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_dfl": loss_dfl}
