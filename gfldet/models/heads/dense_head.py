"""Shared base of dense one-stage heads (GFL, the ATSS / FCOS / FoveaBox / RetinaNet-style heads, SSD).

``DenseHeadBase`` owns the priors of the pyramid, the target building of training (``build_targets``, see
``targets.py``) and the inference path. ``DenseHead`` adds the layers of the RetinaNet family: two conv towers
(cls, reg) on every pyramid level, a 3x3 prediction conv on each, and a learnable per-level scalar multiplying the
regression output.

Hooks of a subclass (every consumer -- ``predict``, the losses, ``gfldet.export`` -- goes through them):
- ``reg_channels`` / ``num_anchors``: output channels per prior and priors per location;
- ``regression_output`` (``DenseHead``): a level's regression output (a branch on the regression tower appends
  channels here);
- ``class_probabilities(cls_logits)``: class probabilities (sigmoid; SSD's softmax without the background);
- ``score_factors(reg)``: per-prior factors of the class probabilities (a quality branch's sigmoid), or None;
- ``decode_rows(reg, centers_px, strides, prior_idx)``: boxes in pixels; the default decodes ltrb distances from
  ``decode_distances`` (stride units), an anchor-delta head overrides it; ``decode_priors(reg, priors,
  prior_idx)`` calls it, a head whose anchors do not follow from centre, stride and index (SSD) overrides that;
- ``level_num_anchors(level)`` / ``decode_level_rows(reg, cells_px, strides, prior_idx, level)``: priors per
  location and decoding level by level, for the export graph (default: ``num_anchors`` and ``decode_rows``);
- ``assign``: the assignment of priors to GTs (default: an ATSS-like assigner on the anchors);
- ``loss``: the losses, from ``build_targets`` and ``flat_logits``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from gfldet.assigners import AssignResult, pad_gt_boxes
from gfldet.box_coding import distance2bbox
from gfldet.host_tensor import host_tensor
from gfldet.models.heads.postprocess import PostProcessConfig, postprocess
from gfldet.models.heads.targets import DenseTargets, mean_over_processes
from gfldet.models.priors import PriorGenerator, Priors

__all__ = ["DenseHeadBase", "DenseHead", "flatten_levels", "mean_over_processes"]


def flatten_levels(maps: Sequence[torch.Tensor], num_anchors: int = 1) -> torch.Tensor:
    """Per-level maps [N, A*K, H_l, W_l] (anchor-major channels) -> [N, P, K], P = sum_l H_l * W_l * A, in prior
    order (level, y, x, anchor)."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1] // num_anchors) for m in maps],
                     dim=1)


def _tower(in_channels: int, feat_channels: int, num_convs: int, norm_groups: int) -> nn.ModuleList:
    """``num_convs`` x [3x3 conv -> GroupNorm(norm_groups) -> ReLU]; norm_groups 0 = no norm (conv with bias)."""
    layers = []
    for i in range(num_convs):
        parts = OrderedDict(conv=nn.Conv2d(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1,
                                           bias=norm_groups == 0))
        if norm_groups:
            parts["norm"] = nn.GroupNorm(norm_groups, feat_channels)
        parts["act"] = nn.ReLU(inplace=True)
        layers.append(nn.Sequential(parts))
    return nn.ModuleList(layers)


class DenseHeadBase(nn.Module):
    """What every dense head shares apart from its layers: priors, target building, flattening, decoding and
    post-processing (the hooks above). ``DenseHead`` adds the towers of the RetinaNet family; a head with other
    layers (SSD's one conv per level) derives from this class and implements ``forward``.

    Subclasses set ``self.assigner`` (used by ``assign``) and ``self.loss_cls`` (``classification_loss``).
    """

    num_pos_over_processes = True  # the loss normaliser is averaged over processes (mmdetection's reduce_mean)

    def __init__(self, *, num_classes: int, strides: Sequence[int], octave_base_scale: float,
                 pad_size_divisor: int, test_cfg: PostProcessConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.pad_size_divisor = pad_size_divisor
        self.test_cfg = test_cfg
        self.prior_generator = PriorGenerator(strides=strides, octave_base_scale=octave_base_scale)

    # -- hooks for subclasses -------------------------------------------------------------------------------------
    @property
    def reg_channels(self) -> int:
        """Regression channels per prior (4 for plain ltrb distances)."""
        return 4

    @property
    def num_anchors(self) -> int:
        """Priors per feature-map location (RetinaNet: 9); output channels are anchor-major."""
        return 1

    def class_probabilities(self, cls_logits: torch.Tensor) -> torch.Tensor:
        """Flattened cls logits [N, P, K] -> class probabilities [N, P, C] (default: sigmoid, K = C)."""
        return cls_logits.sigmoid()

    def score_factors(self, reg: torch.Tensor) -> torch.Tensor | None:
        """Regression rows [N, P, R] -> per-prior factors [N, P] in [0, 1] that multiply the class probabilities
        of the detections at inference (a quality branch's sigmoid), or None (default: none). As mmdetection's
        ``score_factors``, they apply after the score threshold and top-k, which see the class probability alone."""
        return None

    def decode_distances(self, reg: torch.Tensor) -> torch.Tensor:
        """Regression rows [..., R] -> ltrb distances [..., 4] in stride units (default: the rows themselves)."""
        return reg

    def decode_rows(self, reg: torch.Tensor, centers_px: torch.Tensor, strides: torch.Tensor,
                    prior_idx: torch.Tensor) -> torch.Tensor:
        """Regression rows [..., R] of priors with centres [..., 2] (x, y) px, strides [...] px and flattened
        indices ``prior_idx`` [...] (any index with the right remainder modulo ``num_anchors``, e.g. the index within
        a level) -> boxes [..., 4] xyxy px, not clipped. Leading dimensions broadcast."""
        return distance2bbox(centers_px, self.decode_distances(reg) * strides[..., None])

    def decode_priors(self, reg: torch.Tensor, priors: Priors, prior_idx: torch.Tensor) -> torch.Tensor:
        """Regression rows [K, R] of the priors ``prior_idx`` [K] (indices into ``priors``) -> boxes [K, 4] xyxy px,
        not clipped (default: ``decode_rows`` with their centres and strides)."""
        return self.decode_rows(reg, priors.centers_px[prior_idx], priors.strides[prior_idx], prior_idx)

    def level_num_anchors(self, level: int) -> int:
        """Priors per location of pyramid level ``level`` (default: ``num_anchors`` on every level)."""
        return self.num_anchors

    def decode_level_rows(self, reg: torch.Tensor, cells_px: torch.Tensor, strides: torch.Tensor,
                          prior_idx: torch.Tensor, level: int) -> torch.Tensor:
        """The export graph's decoding (``gfldet.export``): regression rows [..., R] of level ``level``'s priors,
        whose cells have the origins ``cells_px`` [..., 2] (x * stride, y * stride) px, strides [...] and indices
        ``prior_idx`` [...] within the level -> boxes [..., 4] xyxy px (default: ``decode_rows``: for these heads
        the cell origin is the prior centre)."""
        return self.decode_rows(reg, cells_px, strides, prior_idx)

    def assign(self, priors: Priors, gt_boxes: torch.Tensor, gt_valid: torch.Tensor,
               prior_valid: torch.Tensor) -> AssignResult:
        """Assign priors to padded GTs (gt_boxes [N, G, 4] xyxy px, gt_valid [N, G], prior_valid [N, P]).

        Default: ``self.assigner.assign(anchors_px, num_per_level, ..., level_grids=...)`` (ATSSAssigner)."""
        return self.assigner.assign(priors.anchors_px, priors.num_per_level, gt_boxes, gt_valid, prior_valid,
                                    level_grids=priors.level_grids)

    @staticmethod
    def check_batch(cls_scores: Sequence[torch.Tensor], **per_image: Sequence) -> None:
        """Raise ValueError unless every per-image list has one entry per image of the outputs' batch."""
        num_images = cls_scores[0].shape[0]
        for name, values in per_image.items():
            if len(values) != num_images:
                raise ValueError(f"{name}: expected one entry per image ({num_images}), got {len(values)}")

    def priors_for(self, maps: Sequence[torch.Tensor]) -> Priors:
        """Priors matching per-level output maps [N, K, H_l, W_l] (cached per sizes/device)."""
        return self.prior_generator([m.shape[-2:] for m in maps], device=maps[0].device)

    def flat_logits(self, cls_scores: Sequence[torch.Tensor],
                    bbox_preds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-level outputs -> cls logits [N, P, C] and regression rows [N, P, R], float32 (also under autocast),
        P in prior order (level, y, x, anchor)."""
        return (flatten_levels(cls_scores, self.num_anchors).float(),
                flatten_levels(bbox_preds, self.num_anchors).float())

    def flat_outputs(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-level outputs -> class probabilities [N, P, C], ``score_factors`` [N, P] (or None) and regression
        rows [N, P, R]."""
        cls_logits, reg = self.flat_logits(cls_scores, bbox_preds)
        return self.class_probabilities(cls_logits), self.score_factors(reg), reg

    def decode_boxes(self, reg: torch.Tensor, priors: Priors, prior_idx: torch.Tensor,
                     max_shape: torch.Tensor | None = None) -> torch.Tensor:
        """Regression rows [K, R] of priors ``prior_idx`` [K] -> boxes [K, 4] xyxy px (``decode_rows``).

        max_shape: optional [K, 2] (h, w) px to clip to.
        """
        boxes = self.decode_priors(reg, priors, prior_idx)
        if max_shape is None:
            return boxes
        limit = max_shape.flip(-1).repeat(1, 2).to(boxes.dtype)  # (w, h, w, h)
        return boxes.clamp(min=0).minimum(limit)

    # -- training -------------------------------------------------------------------------------------------------
    def build_targets(self, cls_scores: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
                      gt_labels: Sequence[torch.Tensor], image_sizes: Sequence[tuple[int, int]]) -> DenseTargets:
        """Assign the priors of per-level outputs [N, A*C, H_l, W_l] to the GTs -> DenseTargets.

        gt_boxes: per image [G_i, 4] xyxy px (resized image); gt_labels: per image [G_i] int64 in 0..C-1;
        image_sizes: (h, w) px of each resized image before batch padding (priors outside it are invalid).
        """
        self.check_batch(cls_scores, gt_boxes=gt_boxes, gt_labels=gt_labels, image_sizes=image_sizes)
        priors = self.priors_for(cls_scores)
        prior_valid = self.prior_generator.valid_flags(priors, image_sizes, pad_size_divisor=self.pad_size_divisor)
        boxes, labels, gt_valid = pad_gt_boxes(list(gt_boxes), list(gt_labels))
        assignment = self.assign(priors, boxes, gt_valid, prior_valid)
        return DenseTargets.build(priors, prior_valid, assignment, boxes, labels, self.num_classes,
                                  num_pos_over_processes=self.num_pos_over_processes)

    def classification_loss(self, cls_logits: torch.Tensor, targets: DenseTargets,
                            soft_targets: torch.Tensor | None = None,
                            weight: torch.Tensor | None = None) -> torch.Tensor:
        """``self.loss_cls`` over the priors, normalised by ``targets.num_pos``.

        cls_logits: [N, P, C]; soft_targets: optional [N, P] score of each prior's labelled class
        (``targets.scatter``), for QFL-like losses; weight: [N, P] per prior (default: ``targets.prior_valid``).
        """
        weight = targets.prior_valid if weight is None else weight
        inputs = [cls_logits.reshape(-1, self.num_classes), targets.labels.reshape(-1)]
        if soft_targets is not None:
            inputs.append(soft_targets.reshape(-1))
        return self.loss_cls(*inputs, weight=weight.reshape(-1).to(cls_logits.dtype), avg_factor=targets.num_pos)

    # -- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
                image_sizes: Sequence[tuple[int, int]],
                scale_factors: Sequence[tuple[float, float]]) -> list[dict[str, torch.Tensor]]:
        """Detections from head outputs.

        cls_scores / bbox_preds: per level [N, C, H_l, W_l] / [N, reg_channels, H_l, W_l]; image_sizes: (h, w) of
        each resized image before batch padding; scale_factors: (sx, sy) of each resize (resized = original * s).
        Returns per image {'boxes': [K, 4] xyxy original px, 'scores': [K], 'labels': [K] int64 in 0..C-1,
        'prior_idx': [K] index into the flattened priors of each detection's prior}.
        """
        self.check_batch(cls_scores, image_sizes=image_sizes, scale_factors=scale_factors)
        priors = self.priors_for(cls_scores)
        probabilities, factors, reg = self.flat_outputs(cls_scores, bbox_preds)
        sizes = host_tensor([list(s) for s in image_sizes], dtype=reg.dtype, device=reg.device)

        def decode(rows: torch.Tensor, prior_idx: torch.Tensor, image_idx: torch.Tensor) -> torch.Tensor:
            return self.decode_boxes(rows, priors, prior_idx, max_shape=sizes[image_idx])

        return postprocess(probabilities, reg, priors.num_per_level, decode, scale_factors, self.test_cfg,
                           score_factors=factors)


class DenseHead(DenseHeadBase):
    """Towers + prediction convs + per-level scales on the shared machinery of ``DenseHeadBase``.

    Layout of the outputs (mmdetection's): per level, cls logits [N, A*num_classes, H_l, W_l] and regression
    outputs [N, A*reg_channels, H_l, W_l] (A = ``num_anchors``, anchor-major channels). Init: every conv
    normal(0, init_std) with zero bias, the cls bias set so that the initial sigmoid score is ``prior_prob``; scales
    start at 1.
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int], feat_channels: int,
                 stacked_convs: int, norm_groups: int, init_std: float, prior_prob: float,
                 octave_base_scale: float, pad_size_divisor: int, test_cfg: PostProcessConfig) -> None:
        for name, value, low in (("feat_channels", feat_channels, 1), ("stacked_convs", stacked_convs, 0)):
            if value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value}")
        super().__init__(num_classes=num_classes, strides=strides, octave_base_scale=octave_base_scale,
                         pad_size_divisor=pad_size_divisor, test_cfg=test_cfg)
        self.cls_convs = _tower(in_channels, feat_channels, stacked_convs, norm_groups)
        self.reg_convs = _tower(in_channels, feat_channels, stacked_convs, norm_groups)
        self.cls_pred = nn.Conv2d(feat_channels, self.num_anchors * num_classes, 3, padding=1)
        self.reg_pred = nn.Conv2d(feat_channels, self.num_anchors * self.reg_channels, 3, padding=1)
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(())) for _ in strides)
        self._init_weights(init_std=init_std, prior_prob=prior_prob)

    def regression_output(self, reg_feat: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Regression-tower features [N, F, H_l, W_l] -> the level's regression output [N, R, H_l, W_l] (float32);
        a head with an extra branch on the regression tower appends its channels here."""
        return (self.reg_pred(reg_feat) * scale).float()

    # -- layers ---------------------------------------------------------------------------------------------------
    def _init_weights(self, *, init_std: float, prior_prob: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """feats: per level [N, in_channels, H_l, W_l] -> (cls logits per level, regression outputs per level)."""
        if len(feats) != len(self.scales):
            raise ValueError(f"head expects {len(self.scales)} levels (strides {self.prior_generator.strides}), "
                             f"got {len(feats)}")
        cls_scores, reg_outputs = [], []
        for feat, scale in zip(feats, self.scales):
            cls_feat, reg_feat = feat, feat
            for layer in self.cls_convs:
                cls_feat = layer(cls_feat)
            for layer in self.reg_convs:
                reg_feat = layer(reg_feat)
            cls_scores.append(self.cls_pred(cls_feat))
            reg_outputs.append(self.regression_output(reg_feat, scale))
        return cls_scores, reg_outputs
