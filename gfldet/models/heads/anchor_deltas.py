"""Anchor-delta box coding shared by the anchor-based heads (RetinaNet, SSD).

Deltas (dx, dy, dw, dh) of a box relative to an anchor, scaled by ``weights`` (torchvision's ``BoxCoder``;
mmdetection's ``DeltaXYWHBBoxCoder`` with ``target_stds = 1 / weights`` and zero means is the same coding), dw and
dh clamped at ``clip`` when decoding.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor
from torchvision.models.detection._utils import BoxCoder

from gfldet.box_coding import aligned_box_iou
from gfldet.models.heads.targets import DenseTargets

__all__ = ["AnchorDeltas"]


class AnchorDeltas:
    """Encode / decode boxes as anchor deltas, and the per-positive terms of an anchor head's losses."""

    def __init__(self, *, weights: Sequence[float], clip: float) -> None:
        self.coder = BoxCoder(weights=tuple(float(w) for w in weights), bbox_xform_clip=clip)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """deltas [..., 4] and anchors [..., 4] xyxy px (broadcast) -> boxes [..., 4] xyxy px, not clipped."""
        anchors = anchors.expand_as(deltas)
        return self.coder.decode_single(deltas.reshape(-1, 4), anchors.reshape(-1, 4)).reshape(deltas.shape)

    def positive_terms(self, targets: DenseTargets, deltas: Tensor, *,
                       with_iou: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """deltas [N, P, 4] of every prior -> the positives' predicted deltas [M, 4], their target deltas [M, 4],
        and (``with_iou``) the IoU of each positive's detached decoded box with its GT [M] (QFL's soft target)."""
        anchors = targets.priors.anchors_px[targets.pos_prior]  # [M, 4] xyxy px
        pos_deltas = targets.positives(deltas)
        iou = None
        if with_iou:
            iou = aligned_box_iou(self.coder.decode_single(pos_deltas.detach(), anchors), targets.gt_boxes_px)
        return pos_deltas, self.coder.encode_single(targets.gt_boxes_px, anchors), iou
