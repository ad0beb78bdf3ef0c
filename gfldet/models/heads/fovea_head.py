"""FoveaBox head (Kong et al. 2020) in the ablation family, with or without QFL (GFL's Table 1(b): 36.4 -> 37.0 AP).

Points (prior centres) are positive inside a GT's fovea on the levels whose scale range holds the GT (FoveaAssigner);
boxes use FoveaBox's log coding (``box_repr: {type: log, base_edge: 2, ...}``) trained by its smooth-L1 only
(no ``loss_bbox``), every positive weighted 1 (``bbox_weighting: uniform``). With ``quality: {type: joint_qfl}`` the
class target of a positive is the IoU of its decoded box. Prior centres are at x * stride (mmdetection's FoveaBox:
at the cell centre); the class loss is normalised by sum_i max(num_pos_i, 1) over the images, as every dense head
(mmdetection's FoveaBox: num_pos + num_images).
"""
from __future__ import annotations

from torch import Tensor

from gfldet.assigners import AssignResult
from gfldet.models.heads.variant_head import VariantHead
from gfldet.models.priors import Priors

__all__ = ["FoveaHead"]


class FoveaHead(VariantHead):
    """VariantHead whose ``assigner`` is a FoveaAssigner over the prior centres (``octave_base_scale`` unused)."""

    def assign(self, priors: Priors, gt_boxes: Tensor, gt_valid: Tensor, prior_valid: Tensor) -> AssignResult:
        return self.assigner.assign(priors.centers_px, priors.num_per_level, gt_boxes, gt_valid, prior_valid)
