"""The ablation head family: one dense head whose options cover the rows of GFL's Tables 1-3.

Options, each a config section built with its own registry (see ``quality.py`` and ``box_repr.py``):
- ``quality``: ``{type: none | centerness_branch | iou_branch | centerness_guided | iou_guided | joint_qfl}``
  (the branch options take the branch's BCE ``loss_weight``);
- ``box_repr``: a section ``{type: dirac | gaussian | general, ...}`` (general: ``reg_max`` n, ``bin_width`` Delta,
  ``dfl_weight`` or null for "without DFL", ``dfl_target_eps``);
- ``bbox_weighting``: per-positive weight of the box losses, ``centerness`` (ATSS: the centerness target),
  ``cls_score`` (GFL: the max detached sigmoid class score) or ``uniform`` (1: FoveaBox);
- the QFL ``beta`` lives in ``loss_cls`` (type qfl).

Everything else is DenseHead's (towers, scales, priors, decode, post-processing) and the target building is GFL's:
positives' boxes and centres in stride units, classification normalised by the number of positives, box losses by
the summed weight (both averaged over processes, at least 1). With ``quality: joint_qfl``, ``box_repr: general``
with DFL and ``bbox_weighting: cls_score`` the losses equal GFLHead's. Subclasses choose the assignment
(``assign``): ATSSHead (anchors), FCOSHead (points, scale ranges, centre sampling), FoveaHead (foveae).

Output layout: per level cls logits [N, C, H, W] and [N, R (+1), H, W] where R = ``box_repr.channels`` and the last
channel, present only for the ``*_branch`` options, is the quality logit (not multiplied by the level's scale).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from gfldet.assigners import AssignResult, pad_gt_boxes
from gfldet.box_coding import bbox2distance, distance2bbox
from gfldet.config import build_from_cfg
from gfldet.models.heads.box_repr import BOX_REPRESENTATIONS, BoxRepresentation
from gfldet.models.heads.dense_head import DenseHead, flatten_levels, mean_over_processes
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.quality import QUALITY_OPTIONS, Quality, centerness_target, quality_target
from gfldet.models.priors import Priors

__all__ = ["VariantHead", "BBOX_WEIGHTINGS"]

BBOX_WEIGHTINGS = ("centerness", "cls_score", "uniform")


def _built(value, kind: type, registry: Mapping, where: str):
    """``value`` if it is already a ``kind`` object, else the object its config section describes."""
    return value if isinstance(value, kind) else build_from_cfg(value, registry, where=where)


class VariantHead(DenseHead):
    """Dense head with quality / box-representation options (module docstring); subclasses implement ``assign``.

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

    def flat_outputs(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """With a quality branch the ranking score is sigmoid(cls) x sigmoid(quality), applied before the score
        threshold and top-k (mmdetection applies it after them)."""
        scores, outputs = super().flat_outputs(cls_scores, bbox_preds)
        if self.quality_pred is None:
            return scores, outputs
        return scores * outputs[..., -1:].sigmoid(), outputs

    def assign(self, priors: Priors, gt_boxes: Tensor, gt_valid: Tensor, prior_valid: Tensor) -> AssignResult:
        """Assign priors to GTs: gt_boxes [N, G, 4] xyxy px (padded), gt_valid [N, G], prior_valid [N, P]."""
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------------------------------
    def loss(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], gt_boxes: Sequence[Tensor],
             gt_labels: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
        """Training losses (same arguments as GFLHead.loss) -> {'loss_cls', 'loss_bbox' (unless loss_bbox is None)}
        plus, by option, 'loss_quality' (branch), 'loss_dfl' (general with DFL), 'loss_gaussian' or 'loss_log_box'."""
        self.check_batch(cls_scores, gt_boxes=gt_boxes, gt_labels=gt_labels, image_sizes=image_sizes)
        priors = self.priors_for(cls_scores)
        cls_logits = flatten_levels(cls_scores).float()  # [N, P, C] (float32 also under autocast)
        outputs = flatten_levels(bbox_preds)  # [N, P, R (+1)]
        prior_valid = self.prior_generator.valid_flags(priors, image_sizes, pad_size_divisor=self.pad_size_divisor)
        boxes, labels, gt_valid = pad_gt_boxes(list(gt_boxes), list(gt_labels))
        assignment = self.assign(priors, boxes, gt_valid, prior_valid)
        target_labels = assignment.gather(labels, fill=self.num_classes)  # [N, P], C = background
        pos_img, pos_prior = assignment.positive.nonzero(as_tuple=True)

        stride = priors.strides[pos_prior][:, None]
        centers = priors.centers_px[pos_prior] / stride  # [M, 2] stride units
        target_boxes = assignment.gather(boxes, fill=0)[pos_img, pos_prior] / stride  # [M, 4] xyxy stride units
        target_ltrb = bbox2distance(centers, target_boxes)  # [M, 4], unclamped
        pos_out = outputs[pos_img, pos_prior]
        pos_reg = pos_out[:, : self._box_channels]
        pred_boxes = distance2bbox(centers, self.box_repr.decode(pos_reg))  # [M, 4] xyxy stride units
        quality = (quality_target(self.option.target, target_ltrb=target_ltrb, pred_boxes=pred_boxes,
                                  target_boxes=target_boxes) if self.option.target != "none" else None)

        num_pos = mean_over_processes(torch.tensor(float(pos_img.numel()), device=cls_logits.device)).clamp(min=1)
        losses = {"loss_cls": self._cls_loss(cls_logits, target_labels, prior_valid, (pos_img, pos_prior),
                                             quality, num_pos)}
        weight = self._box_weight(cls_logits[pos_img, pos_prior], target_ltrb)
        weight_sum = mean_over_processes(weight.sum()).clamp(min=1)
        if self.loss_bbox is not None:
            losses["loss_bbox"] = self.loss_bbox(pred_boxes, target_boxes, weight=weight, avg_factor=weight_sum)
        losses.update(self.box_repr.loss(pos_reg, target_ltrb, weight, weight_sum))
        if self.loss_quality is not None:
            losses["loss_quality"] = self.loss_quality(pos_out[:, -1], quality, avg_factor=num_pos)
        return losses

    def _cls_loss(self, cls_logits: Tensor, target_labels: Tensor, prior_valid: Tensor,
                  positives: tuple[Tensor, Tensor], quality: Tensor | None, num_pos: Tensor) -> Tensor:
        """Classification loss over valid priors, normalised by the number of positives; soft-target options put
        the quality on the labelled class of each positive."""
        flat_logits, flat_labels = cls_logits.reshape(-1, self.num_classes), target_labels.reshape(-1)
        weight = prior_valid.reshape(-1).to(cls_logits.dtype)
        if not self.option.soft_cls_target:
            return self.loss_cls(flat_logits, flat_labels, weight=weight, avg_factor=num_pos)
        scores = torch.zeros_like(prior_valid, dtype=cls_logits.dtype)
        scores[positives] = quality.to(scores.dtype)
        return self.loss_cls(flat_logits, flat_labels, scores.reshape(-1), weight=weight, avg_factor=num_pos)

    def _box_weight(self, pos_logits: Tensor, target_ltrb: Tensor) -> Tensor:
        """Per-positive weight [M] of the box losses (``bbox_weighting``), detached."""
        if self.bbox_weighting == "centerness":
            return centerness_target(target_ltrb)
        if self.bbox_weighting == "uniform":
            return target_ltrb.new_ones(target_ltrb.shape[0])
        return pos_logits.detach().sigmoid().max(dim=1).values
