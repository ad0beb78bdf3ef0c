"""ATSS head (Zhang et al. 2020) in the ablation family: one square anchor per location, ATSS assignment.

The ATSS baseline of GFL's tables is ``quality: centerness_branch``, ``box_repr: {type: dirac}``, focal loss, GIoU
weighted by the centerness target (``configs/atss/atss_r50_fpn_1x_coco.yaml``); other options give the other rows.
Unlike mmdetection's ATSSHead, which regresses anchor deltas, boxes are ltrb distances from the anchor centre in
stride units (the "Dirac" representation of the paper's Table 2(a)).
"""
from __future__ import annotations

from gfldet.models.heads.variant_head import VariantHead

__all__ = ["ATSSHead"]


class ATSSHead(VariantHead):
    """VariantHead whose ``assigner`` is an ATSSAssigner over the priors' anchors (``octave_base_scale`` x stride),
    called by DenseHead's default ``assign``."""
