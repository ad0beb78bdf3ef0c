"""RetinaNet head (Lin et al. 2017) on the shared dense-head machinery, with an optional QFL class-quality score
(GFL's Table 1(b): RetinaNet 35.6 -> 36.4 AP).

``scales_per_octave x len(ratios)`` anchors per location (RetinaNet: 3 x 3 = 9) of sizes
``octave_base_scale * 2^(i / scales_per_octave) * stride`` and height/width ratio r (h = size * sqrt(r),
w = size / sqrt(r)), centred on the prior centre; max-IoU assignment (0.5 / 0.4); anchor deltas (dx, dy, dw, dh)
with torchvision's ``BoxCoder`` and an L1 loss on them, normalised by the number of positives.

Output layout (mmdetection's): per level cls logits [N, A*C, H, W] and deltas [N, A*4, H, W], anchor-major channels;
flattened, prior order is (level, y, x, anchor) with anchors ratio-major. Unlike mmdetection's RetinaHead the shared
DenseHead multiplies the regression output by a learnable per-level scale (initialised to 1).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder

from gfldet.assigners import pad_gt_boxes
from gfldet.assigners.max_iou import IGNORED
from gfldet.box_coding import aligned_box_iou
from gfldet.config import build_from_cfg
from gfldet.models.heads.dense_head import DenseHead, flatten_levels, mean_over_processes
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.quality import QUALITY_OPTIONS, Quality
from gfldet.models.priors import Priors

__all__ = ["RetinaHead"]


class RetinaHead(DenseHead):
    """Anchor-based dense head: A anchors per location, max-IoU assignment, delta regression.

    quality: ``{type: none}`` (focal loss) or ``{type: joint_qfl}`` (QFL, soft target = IoU of the decoded
    predicted box with its GT) -- the options without a branch or centerness; delta_weights / delta_clip:
    torchvision BoxCoder's ``weights`` (RetinaNet: 1, 1, 1, 1) and ``bbox_xform_clip`` (log(1000 / 16));
    assigner: MaxIoUAssigner; loss_bbox: L1Loss-like on deltas. Other arguments as DenseHead.
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int], feat_channels: int,
                 stacked_convs: int, norm_groups: int, init_std: float, prior_prob: float, octave_base_scale: float,
                 scales_per_octave: int, ratios: Sequence[float], pad_size_divisor: int, quality: Mapping | Quality,
                 delta_weights: Sequence[float], delta_clip: float, assigner, loss_cls: nn.Module,
                 loss_bbox: nn.Module, test_cfg: PostProcessConfig) -> None:
        option = quality if isinstance(quality, Quality) else build_from_cfg(quality, QUALITY_OPTIONS,
                                                                             where="head.quality")
        if option.has_branch or option.target == "centerness":
            raise ValueError(f"RetinaHead supports the quality options none, iou_guided and joint_qfl, got "
                             f"{type(option).__name__}")
        option.check_cls_loss(loss_cls)
        self._num_anchors = scales_per_octave * len(ratios)
        super().__init__(num_classes=num_classes, in_channels=in_channels, strides=strides,
                         feat_channels=feat_channels, stacked_convs=stacked_convs, norm_groups=norm_groups,
                         init_std=init_std, prior_prob=prior_prob, octave_base_scale=octave_base_scale,
                         pad_size_divisor=pad_size_divisor, test_cfg=test_cfg)
        self.option = option
        self.assigner, self.loss_cls, self.loss_bbox = assigner, loss_cls, loss_bbox
        self.coder = BoxCoder(weights=tuple(float(w) for w in delta_weights), bbox_xform_clip=delta_clip)
        sizes = octave_base_scale * 2.0 ** (torch.arange(scales_per_octave) / scales_per_octave)  # [S]
        root = torch.tensor([math.sqrt(r) for r in ratios])[:, None]  # [R, 1]
        half_wh = 0.5 * torch.stack([sizes / root, sizes * root], dim=-1).reshape(-1, 2)  # [A, 2] (w, h) / stride
        self.register_buffer("anchor_half_wh", half_wh, persistent=False)

    @property
    def num_anchors(self) -> int:
        return self._num_anchors

    def priors_for(self, maps: Sequence[Tensor]) -> Priors:
        """A anchors per location: [P * A] priors in (level, y, x, anchor) order."""
        base = super().priors_for(maps)
        a = self.num_anchors
        half = self.anchor_half_wh[None] * base.strides[:, None, None]  # [P, A, 2]
        centers = base.centers_px[:, None, :]
        anchors = torch.cat([centers - half, centers + half], dim=-1).reshape(-1, 4)
        return replace(base, centers_px=base.centers_px.repeat_interleave(a, dim=0), anchors_px=anchors,
                       strides=base.strides.repeat_interleave(a), grid_xy=base.grid_xy.repeat_interleave(a, dim=0),
                       num_per_level=tuple(n * a for n in base.num_per_level))

    def _flatten(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """-> cls logits [N, P*A, C] and deltas [N, P*A, 4], float32 (also under autocast)."""
        cls = flatten_levels(cls_scores).float()
        deltas = flatten_levels(bbox_preds).float()
        return cls.reshape(cls.shape[0], -1, self.num_classes), deltas.reshape(cls.shape[0], -1, 4)

    def decode_boxes(self, reg: Tensor, priors: Priors, prior_idx: Tensor,
                     max_shape: Tensor | None = None) -> Tensor:
        """Deltas [K, 4] of anchors ``prior_idx`` [K] -> boxes [K, 4] xyxy px, clipped to max_shape [K, 2] (h, w)."""
        boxes = self.coder.decode_single(reg, priors.anchors_px[prior_idx])
        if max_shape is None:
            return boxes
        limit = max_shape.flip(-1).repeat(1, 2).to(boxes.dtype)  # (w, h, w, h)
        return boxes.clamp(min=0).minimum(limit)

    def loss(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], gt_boxes: Sequence[Tensor],
             gt_labels: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
        """Training losses (same arguments as GFLHead.loss) -> {'loss_cls', 'loss_bbox'}; ignored anchors
        (IoU between the two thresholds) are left out of the class loss."""
        self.check_batch(cls_scores, gt_boxes=gt_boxes, gt_labels=gt_labels, image_sizes=image_sizes)
        priors = self.priors_for(cls_scores)
        cls_logits, deltas = self._flatten(cls_scores, bbox_preds)
        prior_valid = self.prior_generator.valid_flags(priors, image_sizes, pad_size_divisor=self.pad_size_divisor)
        boxes, labels, gt_valid = pad_gt_boxes(list(gt_boxes), list(gt_labels))
        assignment = self.assigner.assign(priors.anchors_px, boxes, gt_valid, prior_valid)
        target_labels = assignment.gather(labels, fill=self.num_classes)
        pos_img, pos_prior = assignment.positive.nonzero(as_tuple=True)
        anchors = priors.anchors_px[pos_prior]
        target_boxes = assignment.gather(boxes, fill=0)[pos_img, pos_prior]
        pos_deltas = deltas[pos_img, pos_prior]

        num_pos = mean_over_processes(torch.tensor(float(pos_img.numel()), device=cls_logits.device)).clamp(min=1)
        weight = (prior_valid & (assignment.gt_index != IGNORED)).reshape(-1).to(cls_logits.dtype)
        flat_logits, flat_labels = cls_logits.reshape(-1, self.num_classes), target_labels.reshape(-1)
        if self.option.soft_cls_target:
            scores = torch.zeros_like(prior_valid, dtype=cls_logits.dtype)
            pred_boxes = self.coder.decode_single(pos_deltas.detach(), anchors)
            scores[pos_img, pos_prior] = aligned_box_iou(pred_boxes, target_boxes).to(scores.dtype)
            loss_cls = self.loss_cls(flat_logits, flat_labels, scores.reshape(-1), weight=weight, avg_factor=num_pos)
        else:
            loss_cls = self.loss_cls(flat_logits, flat_labels, weight=weight, avg_factor=num_pos)
        target_deltas = self.coder.encode_single(target_boxes, anchors)
        return {"loss_cls": loss_cls, "loss_bbox": self.loss_bbox(pos_deltas, target_deltas, avg_factor=num_pos)}

    def flat_outputs(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        cls_logits, deltas = self._flatten(cls_scores, bbox_preds)
        return cls_logits.sigmoid(), deltas
