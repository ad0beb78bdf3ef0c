"""SSD head (Liu et al. 2016) as mmdetection 3.3's ``SSDHead``, with an optional QFL class-quality score (GFL's
Table 1(b): SSD512 29.4 -> 30.2 AP).

Per level l one 3x3 conv predicts ``A_l x (C + 1)`` class logits (softmax, background last) and one ``A_l x 4``
anchor deltas, on that level's own channels (no towers, no per-level scale). Anchors (mmdetection's
``SSDAnchorGenerator`` with ``scale_major=False``) are centred on the cell centres ``((x + 0.5) s, (y + 0.5) s)``; per
location, in this order: the square of side ``min_size``, the square of side ``sqrt(min_size * max_size)``, then for
each ratio r of the level the boxes of height/width ratio 1/r and r with ``sqrt(w * h) = min_size``: 4 or 6 anchors.
Assignment: max IoU (0.5 / 0.5), each GT also claiming its best anchor. Losses: softmax cross-entropy on the
positives and the 3 x num_pos hardest negatives of each image, smooth-L1 (beta 1) on deltas with weights
(10, 10, 5, 5) (mmdetection's target stds 0.1, 0.1, 0.2, 0.2); both normalised by ``sum_i max(num_pos_i, 1)`` over
this process's images (mmdetection's ``AnchorHead``: not averaged over processes).

``quality: {type: joint_qfl}`` replaces the softmax by C sigmoids trained with QFL towards the IoU of each
positive's decoded box with its GT (over every valid anchor, no mining), the class bias starting at ``prior_prob``
as in the focal-loss heads. The paper does not detail its SSD + QFL setting; this is our reading of it.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from gfldet.assigners import AssignResult
from gfldet.assigners.max_iou import IGNORED
from gfldet.config import build_from_cfg
from gfldet.losses import QualityFocalLoss
from gfldet.losses.hard_negative_ce import HardNegativeCrossEntropyLoss
from gfldet.models.heads.anchor_deltas import AnchorDeltas
from gfldet.models.heads.dense_head import DenseHeadBase, flatten_levels
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.quality import QUALITY_OPTIONS, JointQFL, NoQuality, Quality
from gfldet.models.priors import Priors, lru_get

__all__ = ["SSDHead", "ssd_anchor_shapes"]

# quality option -> the classification loss it trains with
_CLS_LOSSES = {NoQuality: HardNegativeCrossEntropyLoss, JointQFL: QualityFocalLoss}


def ssd_anchor_shapes(min_size: float, max_size: float, ratios: Sequence[float]) -> Tensor:
    """One level's anchor (w, h) [A, 2] px, A = 2 + 2 len(ratios), in mmdetection's SSD order (see module).

    Computed with mmdetection's float32 arithmetic (w = min_size * scale / sqrt(r), h = min_size * scale * sqrt(r)
    for scales (1, sqrt(max_size / min_size)) and r = h / w in (1, 1/r_1, r_1, ...)), so anchors match bit for bit.
    """
    hw_ratios = torch.tensor([1.0] + [x for ratio in ratios for x in (1 / ratio, ratio)])
    scales = torch.tensor([1.0, math.sqrt(max_size / min_size)])
    h_ratios = hw_ratios.sqrt()
    widths = (min_size * scales[:, None] * (1 / h_ratios)[None, :]).reshape(-1)
    heights = (min_size * scales[:, None] * h_ratios[None, :]).reshape(-1)
    order = [0, len(hw_ratios), *range(1, len(hw_ratios))]  # min square, sqrt(min * max) square, then the ratios
    return torch.stack([widths, heights], dim=1)[order]


class SSDHead(DenseHeadBase):
    """SSD's per-level prediction convs on the shared dense-head machinery (priors, targets, post-processing).

    in_channels: channels of each level (SSD512: 512, 1024, 512, 256, 256, 256, 256); strides: px per cell of each
    level (the anchor grid; SSD512: 8 ... 512); min_sizes / max_sizes: px per level (SSD512 on COCO: 20 51 133 215
    296 378 460 / 51 133 215 296 378 460 542); ratios: per level the extra ratios r (SSD: [2] or [2, 3]);
    quality: ``{type: none}`` (softmax + hard negative mining, loss_cls: hard_negative_ce) or ``{type: joint_qfl}``
    (sigmoid + QFL, loss_cls: qfl); prior_prob: initial sigmoid score with joint_qfl (unused by the softmax);
    delta_weights / delta_clip: the anchor-delta coding; assigner: MaxIoUAssigner; loss_bbox: smooth_l1.
    """

    per_level_channels = True  # build_detector passes in_channels as a list, one entry per level
    num_pos_over_processes = False  # mmdetection's AnchorHead normalises by each process's own positives

    def __init__(self, *, num_classes: int, in_channels: Sequence[int], strides: Sequence[int],
                 min_sizes: Sequence[float], max_sizes: Sequence[float], ratios: Sequence[Sequence[float]],
                 quality: Mapping | Quality, prior_prob: float, delta_weights: Sequence[float], delta_clip: float,
                 pad_size_divisor: int, assigner, loss_cls: nn.Module, loss_bbox: nn.Module,
                 test_cfg: PostProcessConfig) -> None:
        num_levels = len(strides)
        for name, values in (("in_channels", in_channels), ("min_sizes", min_sizes), ("max_sizes", max_sizes),
                             ("ratios", ratios)):
            if len(values) != num_levels:
                raise ValueError(f"{name}: one entry per level ({num_levels} strides {list(strides)}), "
                                 f"got {len(values)}")
        option = quality if isinstance(quality, Quality) else build_from_cfg(quality, QUALITY_OPTIONS,
                                                                             where="head.quality")
        if type(option) not in _CLS_LOSSES:
            raise ValueError(f"SSDHead supports the quality options none and joint_qfl, got {type(option).__name__}")
        if type(loss_cls) is not _CLS_LOSSES[type(option)]:
            raise ValueError(f"SSDHead with quality {type(option).__name__} needs loss_cls of type "
                             f"{_CLS_LOSSES[type(option)].__name__}, got {type(loss_cls).__name__}")
        super().__init__(num_classes=num_classes, strides=strides, octave_base_scale=1.0,
                         pad_size_divisor=pad_size_divisor, test_cfg=test_cfg)
        self.option, self.assigner, self.loss_cls, self.loss_bbox = option, assigner, loss_cls, loss_bbox
        self.deltas = AnchorDeltas(weights=delta_weights, clip=delta_clip)
        shapes = [ssd_anchor_shapes(lo, hi, r) for lo, hi, r in zip(min_sizes, max_sizes, ratios)]
        self.anchors_per_level = [len(s) for s in shapes]
        # (w, h) px of every level's anchors, zero-padded to [L, max A_l, 2]: a buffer, so it follows .to(device)
        self.register_buffer("anchor_wh", torch.nn.utils.rnn.pad_sequence(shapes, batch_first=True),
                             persistent=False)
        self._priors_cache: OrderedDict = OrderedDict()
        self.cls_channels = num_classes if option.soft_cls_target else num_classes + 1
        self.cls_convs = nn.ModuleList(nn.Conv2d(c, a * self.cls_channels, 3, padding=1)
                                       for c, a in zip(in_channels, self.anchors_per_level))
        self.reg_convs = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1)
                                       for c, a in zip(in_channels, self.anchors_per_level))
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)
        if option.soft_cls_target:
            for conv in self.cls_convs:
                nn.init.constant_(conv.bias, -math.log((1 - prior_prob) / prior_prob))

    @property
    def num_anchors(self) -> int:
        """Not defined: A_l differs from level to level (``level_num_anchors``). An AttributeError (which
        ``nn.Module`` reports as a missing attribute) rather than another error: ``torch.jit`` probes properties."""
        raise AttributeError("SSDHead has a different number of anchors per level: see level_num_anchors")

    @property
    def anchor_shapes(self) -> list[Tensor]:
        """Per level the anchors' (w, h) [A_l, 2] px, on the head's device."""
        return [wh[:a] for wh, a in zip(self.anchor_wh, self.anchors_per_level)]

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """feats: per level [N, in_channels[l], H_l, W_l] -> (cls logits [N, A_l * K, H_l, W_l] per level, K = C + 1
        (softmax) or C (QFL); deltas [N, A_l * 4, H_l, W_l] per level, float32), anchor-major channels."""
        if len(feats) != len(self.cls_convs):
            raise ValueError(f"head expects {len(self.cls_convs)} levels, got {len(feats)}")
        return ([conv(f) for conv, f in zip(self.cls_convs, feats)],
                [conv(f).float() for conv, f in zip(self.reg_convs, feats)])

    def priors_for(self, maps: Sequence[Tensor]) -> Priors:
        """The anchors of every level, [sum_l H_l W_l A_l] priors in (level, y, x, anchor) order (cached per sizes
        and device, as the base priors)."""
        key = (tuple(tuple(m.shape[-2:]) for m in maps), maps[0].device)
        return lru_get(self._priors_cache, key, lambda: self._anchor_priors(super(SSDHead, self).priors_for(maps)),
                       size=self.prior_generator.cache_size)

    def _anchor_priors(self, base: Priors) -> Priors:
        """One-prior-per-cell ``base`` priors -> SSD's anchors (see ``_anchors``)."""
        counts = self.anchors_per_level
        grid = torch.cat([g.repeat_interleave(a, dim=0)
                          for g, a in zip(base.grid_xy.split(base.num_per_level), counts)])
        strides = torch.cat([s.repeat_interleave(a) for s, a in zip(base.strides.split(base.num_per_level), counts)])
        wh = torch.cat([shapes.to(strides).repeat(n, 1) for shapes, n in zip(self.anchor_shapes, base.num_per_level)])
        cells = grid.to(strides.dtype) * strides[:, None]
        return Priors(centers_px=cells + 0.5 * strides[:, None], anchors_px=_anchors(cells, strides, wh),
                      strides=strides, grid_xy=grid,
                      num_per_level=tuple(n * a for n, a in zip(base.num_per_level, counts)),
                      level_grids=base.level_grids)

    def flat_logits(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Per-level outputs (all levels, or any subset in order) -> cls logits [N, P, K] and deltas [N, P, 4],
        float32, P in prior order: with K channels per prior whatever A_l, no level needs to be known."""
        return (torch.cat([flatten_levels([m], m.shape[1] // self.cls_channels) for m in cls_scores], dim=1).float(),
                torch.cat([flatten_levels([m], m.shape[1] // 4) for m in bbox_preds], dim=1).float())

    def class_probabilities(self, cls_logits: Tensor) -> Tensor:
        """[N, P, K] -> [N, P, C]: the softmax without its background column, or the QFL sigmoids."""
        if self.option.soft_cls_target:
            return cls_logits.sigmoid()
        return cls_logits.softmax(dim=-1)[..., : self.num_classes]

    def decode_rows(self, reg: Tensor, centers_px: Tensor, strides: Tensor, prior_idx: Tensor) -> Tensor:
        raise NotImplementedError("SSDHead decodes from its anchors: use decode_priors")

    def decode_priors(self, reg: Tensor, priors: Priors, prior_idx: Tensor) -> Tensor:
        """Deltas [K, 4] of the anchors ``priors.anchors_px[prior_idx]`` -> boxes [K, 4] xyxy px, not clipped."""
        return self.deltas.decode(reg, priors.anchors_px[prior_idx])

    def level_num_anchors(self, level: int) -> int:
        return self.anchors_per_level[level]

    def decode_level_rows(self, reg: Tensor, cells_px: Tensor, strides: Tensor, prior_idx: Tensor,
                          level: int) -> Tensor:
        """The export graph's decoding: the anchor of each prior rebuilt from its cell origin ``cells_px`` [..., 2]
        px, stride [...] and index within the level [...] (anchor = index modulo A_l), as ``priors_for`` does."""
        wh = self.anchor_shapes[level].to(reg)[prior_idx % self.anchors_per_level[level]]
        return self.deltas.decode(reg, _anchors(cells_px, strides, wh))

    def assign(self, priors: Priors, gt_boxes: Tensor, gt_valid: Tensor, prior_valid: Tensor) -> AssignResult:
        """Max-IoU assignment of the anchors."""
        return self.assigner.assign(priors.anchors_px, gt_boxes, gt_valid, prior_valid)

    def loss(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], gt_boxes: Sequence[Tensor],
             gt_labels: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
        """Training losses (same arguments as GFLHead.loss) -> {'loss_cls', 'loss_bbox'}, both normalised by
        ``targets.num_pos``."""
        targets = self.build_targets(cls_scores, gt_boxes, gt_labels, image_sizes)
        cls_logits, deltas = self.flat_logits(cls_scores, bbox_preds)  # [N, P, K], [N, P, 4]
        pos_deltas, target_deltas, iou = self.deltas.positive_terms(targets, deltas,
                                                                    with_iou=self.option.soft_cls_target)
        eligible = targets.prior_valid & (targets.assignment.gt_index != IGNORED)
        if iou is None:
            loss_cls = self.loss_cls(cls_logits, targets.labels, eligible, avg_factor=targets.num_pos)
        else:
            loss_cls = self.classification_loss(cls_logits, targets, targets.scatter(iou), weight=eligible)
        loss_bbox = self.loss_bbox(pos_deltas, target_deltas, avg_factor=targets.num_pos)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}



def _anchors(cells_px: Tensor, strides: Tensor, wh: Tensor) -> Tensor:
    """Anchors [..., 4] xyxy px of cells with origins [..., 2] (x s, y s) px, strides [...] and anchor sizes (w, h)
    [..., 2] px: centred on the cell centre, computed as mmdetection's (base box around (s/2, s/2), then shifted by
    the cell origin) so that the floats agree bit for bit."""
    center_in_cell, half_wh = 0.5 * strides[..., None], 0.5 * wh
    return torch.cat([center_in_cell - half_wh, center_in_cell + half_wh], dim=-1) + torch.cat([cells_px] * 2, dim=-1)
