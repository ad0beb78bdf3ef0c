"""FCOS head (Tian et al. 2019) in the ablation family: points (prior centres), FCOS assignment with centre
sampling and per-level scale ranges, boxes as ltrb distances in stride units (``norm_on_bbox``).

The FCOS column of GFL's tables is the mmdetection recipe with centre sampling, centerness on the regression tower
and GIoU: ``quality: {type: centerness_branch}``, ``box_repr: {type: dirac}``, ``bbox_weighting: centerness``
(``configs/ablations/_base_/fcos_r50_fpn_1x.yaml``). Prior centres are at ``(x * stride, y * stride)`` as for every
gfldet head; mmdetection's FCOS puts its points at the cell centres (offset 0.5).
"""
from __future__ import annotations

from torch import Tensor

from gfldet.assigners import AssignResult
from gfldet.models.heads.variant_head import VariantHead
from gfldet.models.priors import Priors

__all__ = ["FCOSHead"]


class FCOSHead(VariantHead):
    """VariantHead whose ``assigner`` is an FCOSAssigner over the prior centres (``octave_base_scale`` unused)."""

    def assign(self, priors: Priors, gt_boxes: Tensor, gt_valid: Tensor, prior_valid: Tensor) -> AssignResult:
        return self.assigner.assign(priors.centers_px, priors.strides, priors.num_per_level, gt_boxes, gt_valid,
                                    prior_valid)
