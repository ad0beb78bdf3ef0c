"""RetinaNet head (Lin et al. 2017) on the shared dense-head machinery, with an optional QFL class-quality score
(GFL's Table 1(b): RetinaNet 35.6 -> 36.4 AP).

``scales_per_octave x len(ratios)`` anchors per location (RetinaNet: 3 x 3 = 9) of sizes
``octave_base_scale * 2^(i / scales_per_octave) * stride`` and height/width ratio r (h = size * sqrt(r),
w = size / sqrt(r)), centred on the prior centre; max-IoU assignment (0.5 / 0.4); anchor deltas (dx, dy, dw, dh)
(``anchor_deltas.py``) and an L1 loss on them, normalised by sum_i max(num_pos_i, 1) over this process's images
(mmdetection 3.3's ``AnchorHead``, not averaged over processes).

Output layout (mmdetection's): per level cls logits [N, A*C, H, W] and deltas [N, A*4, H, W], anchor-major channels;
flattened, prior order is (level, y, x, anchor) with anchors ratio-major. Unlike mmdetection's RetinaHead the shared
DenseHead multiplies the regression output by a learnable per-level scale (initialised to 1).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import replace
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from gfldet.assigners import AssignResult
from gfldet.assigners.max_iou import IGNORED
from gfldet.config import build_from_cfg
from gfldet.models.heads.anchor_deltas import AnchorDeltas
from gfldet.models.heads.dense_head import DenseHead
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.quality import QUALITY_OPTIONS, Quality
from gfldet.models.priors import Priors, lru_get

__all__ = ["RetinaHead"]


class RetinaHead(DenseHead):
    """Anchor-based dense head: A anchors per location, max-IoU assignment, delta regression.

    quality: ``{type: none}`` (focal loss) or ``{type: joint_qfl}`` (QFL, soft target = IoU of the decoded
    predicted box with its GT) -- the options without a branch or centerness; delta_weights / delta_clip:
    torchvision BoxCoder's ``weights`` (RetinaNet: 1, 1, 1, 1) and ``bbox_xform_clip`` (log(1000 / 16));
    assigner: MaxIoUAssigner; loss_bbox: L1Loss-like on deltas. Other arguments as DenseHead.
    """

    num_pos_over_processes = False  # mmdetection's AnchorHead normalises by each process's own positives

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
        self.deltas = AnchorDeltas(weights=delta_weights, clip=delta_clip)
        sizes = octave_base_scale * 2.0 ** (torch.arange(scales_per_octave) / scales_per_octave)  # [S]
        root = torch.tensor([math.sqrt(r) for r in ratios])[:, None]  # [R, 1]
        half_wh = 0.5 * torch.stack([sizes / root, sizes * root], dim=-1).reshape(-1, 2)  # [A, 2] (w, h) / stride
        self.register_buffer("anchor_half_wh", half_wh, persistent=False)
        self._priors_cache: OrderedDict = OrderedDict()

    @property
    def num_anchors(self) -> int:
        return self._num_anchors

    def anchor_boxes(self, centers_px: Tensor, strides: Tensor, prior_idx: Tensor) -> Tensor:
        """Anchors [..., 4] xyxy px of priors with centres [..., 2] px, strides [...] px and flattened indices
        ``prior_idx`` [...] (anchor = index modulo A)."""
        half = self.anchor_half_wh[prior_idx % self.num_anchors] * strides[..., None]
        return torch.cat([centers_px - half, centers_px + half], dim=-1)

    def priors_for(self, maps: Sequence[Tensor]) -> Priors:
        """A anchors per location: [P * A] priors in (level, y, x, anchor) order (cached per sizes and device, as the
        base priors)."""
        key = (tuple(tuple(m.shape[-2:]) for m in maps), maps[0].device)
        return lru_get(self._priors_cache, key, lambda: self._anchor_priors(super(RetinaHead, self).priors_for(maps)),
                       size=self.prior_generator.cache_size)

    def _anchor_priors(self, base: Priors) -> Priors:
        """One-prior-per-cell ``base`` priors -> A anchors per cell."""
        a = self.num_anchors
        centers, strides = base.centers_px.repeat_interleave(a, dim=0), base.strides.repeat_interleave(a)
        anchors = self.anchor_boxes(centers, strides, torch.arange(len(strides), device=strides.device))
        return replace(base, centers_px=centers, anchors_px=anchors, strides=strides,
                       grid_xy=base.grid_xy.repeat_interleave(a, dim=0),
                       num_per_level=tuple(n * a for n in base.num_per_level))

    def assign(self, priors: Priors, gt_boxes: Tensor, gt_valid: Tensor, prior_valid: Tensor) -> AssignResult:
        """Max-IoU assignment of the anchors (gt_index IGNORED between the two IoU thresholds)."""
        return self.assigner.assign(priors.anchors_px, gt_boxes, gt_valid, prior_valid)

    def decode_distances(self, reg: Tensor) -> Tensor:
        raise NotImplementedError("RetinaHead regresses anchor deltas, not distances: use decode_rows")

    def decode_rows(self, reg: Tensor, centers_px: Tensor, strides: Tensor, prior_idx: Tensor) -> Tensor:
        """Deltas [..., 4] of the anchors of priors (centres [..., 2] px, strides [...], indices [...]) -> boxes
        [..., 4] xyxy px, not clipped."""
        return self.deltas.decode(reg, self.anchor_boxes(centers_px, strides, prior_idx))

    def loss(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], gt_boxes: Sequence[Tensor],
             gt_labels: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
        """Training losses (same arguments as GFLHead.loss) -> {'loss_cls', 'loss_bbox'}; ignored anchors
        (IoU between the two thresholds) are left out of the class loss; both losses are normalised by
        ``targets.num_pos`` (sum_i max(num_pos_i, 1) of this process, mmdetection 3.3's RetinaNet)."""
        targets = self.build_targets(cls_scores, gt_boxes, gt_labels, image_sizes)
        cls_logits, deltas = self.flat_logits(cls_scores, bbox_preds)  # [N, P*A, C], [N, P*A, 4]
        pos_deltas, target_deltas, iou = self.deltas.positive_terms(targets, deltas,
                                                                    with_iou=self.option.soft_cls_target)
        weight = targets.prior_valid & (targets.assignment.gt_index != IGNORED)
        soft = None if iou is None else targets.scatter(iou)
        return {"loss_cls": self.classification_loss(cls_logits, targets, soft, weight=weight),
                "loss_bbox": self.loss_bbox(pos_deltas, target_deltas, avg_factor=targets.num_pos)}
