"""The ablation head family: one dense head whose options cover the rows of GFL's Tables 1-3.

Options, each a config section built with its own registry (see ``quality.py`` and ``box_repr.py``):
- ``quality``: ``{type: none | centerness_branch | iou_branch | centerness_guided | iou_guided | joint_qfl}``
  (the branch options take the branch's BCE ``loss_weight``);
- ``box_repr``: a section ``{type: dirac | gaussian | general, ...}`` (general: ``reg_max`` n, ``bin_width`` Delta,
  ``dfl_weight`` or null for "without DFL", ``dfl_target_eps``);
- ``bbox_weighting``: per-positive weight of the box losses, ``centerness`` (ATSS: the centerness target),
  ``cls_score`` (GFL: the max detached sigmoid class score) or ``uniform`` (1: FoveaBox);
- the QFL ``beta`` lives in ``loss_cls`` (type qfl).

Everything else is DenseHead's (towers, scales, priors, decode, post-processing, ``build_targets``) and shared with
GFLHead (``targets.py``): positives' boxes and centres in stride units, classification normalised by
sum_i max(num_pos_i, 1), box losses by the summed weight (both averaged over processes, at least 1). With
``quality: joint_qfl``, ``box_repr: general`` with DFL (bin_width 1) and ``bbox_weighting: cls_score`` the losses
equal GFLHead's. Subclasses choose the assignment (``assign``): ATSSHead (anchors, DenseHead's default), FCOSHead
(points, scale ranges, centre sampling), FoveaHead (foveae).

Output layout: per level cls logits [N, C, H, W] and [N, R (+1), H, W] where R = ``box_repr.channels`` and the last
channel, present only for the ``*_branch`` options, is the quality logit (not multiplied by the level's scale).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from gfldet.box_coding import distance2bbox
from gfldet.config import build_from_cfg
from gfldet.models.heads.box_repr import BOX_REPRESENTATIONS, BoxRepresentation
from gfldet.models.heads.dense_head import DenseHead
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.quality import QUALITY_OPTIONS, Quality, centerness_target, quality_target
from gfldet.models.heads.targets import max_class_score, weight_normaliser

__all__ = ["VariantHead", "BBOX_WEIGHTINGS"]

BBOX_WEIGHTINGS = ("centerness", "cls_score", "uniform")


def _built(value, kind: type, registry: Mapping, where: str):
    """``value`` if it is already a ``kind`` object, else the object its config section describes."""
    return value if isinstance(value, kind) else build_from_cfg(value, registry, where=where)


class VariantHead(DenseHead):
    """Dense head with quality / box-representation options (module docstring); subclasses choose ``assign``.

    quality / box_repr: config sections (mappings with ``type``) or built Quality / BoxRepresentation objects;
    loss_cls: FocalLoss (none, *_branch), SoftFocalLoss (*_guided) or QualityFocalLoss (joint_qfl); loss_bbox:
    GIoULoss-like on decoded boxes (stride units), or None for a representation trained by its own loss only
    (FoveaBox's log coding). See DenseHead for the tower arguments.
    """

    def __init__(self, *, num_classes: int, in_channels: int, strides: Sequence[int], feat_channels: int,
                 stacked_convs: int, norm_groups: int, init_std: float, prior_prob: float, octave_base_scale: float,
                 pad_size_divisor: int, quality: Mapping | Quality, box_repr: Mapping | BoxRepresentation,
                 bbox_weighting: str, assigner, loss_cls: nn.Module, loss_bbox: nn.Module | None = None,
                 test_cfg: PostProcessConfig) -> None:
        if bbox_weighting not in BBOX_WEIGHTINGS:
            raise ValueError(f"bbox_weighting must be one of {', '.join(BBOX_WEIGHTINGS)}, got {bbox_weighting!r}")
        option = _built(quality, Quality, QUALITY_OPTIONS, "head.quality")
        option.check_cls_loss(loss_cls)
        box = _built(box_repr, BoxRepresentation, BOX_REPRESENTATIONS, "head.box_repr")
        self._box_channels = box.channels
        super().__init__(num_classes=num_classes, in_channels=in_channels, strides=strides,
                         feat_channels=feat_channels, stacked_convs=stacked_convs, norm_groups=norm_groups,
                         init_std=init_std, prior_prob=prior_prob, octave_base_scale=octave_base_scale,
                         pad_size_divisor=pad_size_divisor, test_cfg=test_cfg)
        self.option, self.bbox_weighting = option, bbox_weighting
        self.box_repr = box
        self.assigner = assigner
        self.loss_cls, self.loss_bbox, self.loss_quality = loss_cls, loss_bbox, option.branch_loss
        self.quality_pred = nn.Conv2d(feat_channels, 1, 3, padding=1) if option.has_branch else None
        if self.quality_pred is not None:
            nn.init.normal_(self.quality_pred.weight, std=init_std)
            nn.init.zeros_(self.quality_pred.bias)

    # -- DenseHead hooks ------------------------------------------------------------------------------------------
    @property
    def reg_channels(self) -> int:
        return self._box_channels

    def decode_distances(self, reg: Tensor) -> Tensor:
        """Outputs [..., R (+1)] -> ltrb distances [..., 4] in stride units (the quality channel is ignored)."""
        return self.box_repr.decode(reg[..., : self._box_channels])

    def regression_output(self, reg_feat: Tensor, scale: Tensor) -> Tensor:
        """DenseHead's output, with the quality logit appended as the last channel when there is a branch."""
        reg = super().regression_output(reg_feat, scale)
        if self.quality_pred is None:
            return reg
        return torch.cat([reg, self.quality_pred(reg_feat).float()], dim=1)

    def score_factors(self, reg: Tensor) -> Tensor | None:
        """With a quality branch, its sigmoid [N, P] (the quality logit is the last row channel): it multiplies the
        class probability of each detection after the score threshold and top-k; None without a branch."""
        return None if self.quality_pred is None else reg[..., -1].sigmoid()

    # -- training -------------------------------------------------------------------------------------------------
    def loss(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], gt_boxes: Sequence[Tensor],
             gt_labels: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
        """Training losses (same arguments as GFLHead.loss) -> {'loss_cls', 'loss_bbox' (unless loss_bbox is None)}
        plus, by option, 'loss_quality' (branch), 'loss_dfl' (general with DFL), 'loss_gaussian' or 'loss_log_box'."""
        targets = self.build_targets(cls_scores, gt_boxes, gt_labels, image_sizes)
        cls_logits, outputs = self.flat_logits(cls_scores, bbox_preds)  # [N, P, C], [N, P, R (+1)]
        pos_out = targets.positives(outputs)
        pos_reg = pos_out[:, : self._box_channels]
        pred_boxes = distance2bbox(targets.centers, self.box_repr.decode(pos_reg))  # [M, 4] xyxy stride units
        quality = (quality_target(self.option.target, target_ltrb=targets.target_ltrb, pred_boxes=pred_boxes,
                                  target_boxes=targets.target_boxes) if self.option.target != "none" else None)
        soft = targets.scatter(quality) if self.option.soft_cls_target else None
        losses = {"loss_cls": self.classification_loss(cls_logits, targets, soft)}
        weight = self._box_weight(targets.positives(cls_logits), targets.target_ltrb)
        weight_sum = weight_normaliser(weight)
        if self.loss_bbox is not None:
            losses["loss_bbox"] = self.loss_bbox(pred_boxes, targets.target_boxes, weight=weight,
                                                 avg_factor=weight_sum)
        losses.update(self.box_repr.loss(pos_reg, targets.target_ltrb, weight, weight_sum))
        if self.loss_quality is not None:
            losses["loss_quality"] = self.loss_quality(pos_out[:, -1], quality, avg_factor=targets.num_pos)
        return losses

    def _box_weight(self, pos_logits: Tensor, target_ltrb: Tensor) -> Tensor:
        """Per-positive weight [M] of the box losses (``bbox_weighting``), detached."""
        if self.bbox_weighting == "centerness":
            return centerness_target(target_ltrb)
        if self.bbox_weighting == "uniform":
            return target_ltrb.new_ones(target_ltrb.shape[0])
        return max_class_score(pos_logits)
