"""Box coding for distance-based (point -> ltrb) detectors and GFL's integral regression.

Conventions
-----------
- ``xyxy``: boxes as ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``.
- ``ltrb``: distances from a point to the left, top, right and bottom sides of a box.
- Units are whatever the caller passes, as long as points, distances and boxes share them.
  The GFL head works in *stride units* of the prior's level (pixels / stride); inference
  decodes in pixels. Nothing here knows about strides.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "aligned_box_iou",
    "bbox2distance",
    "distance2bbox",
    "integral_bins",
    "integral_distance",
]

MaxShape = Union[Sequence[int], Tensor]


def distance2bbox(points: Tensor, distances: Tensor, max_shape: Optional[MaxShape] = None) -> Tensor:
    """Decode ltrb distances from points into xyxy boxes.

    Args:
        points: ``[..., 2]`` point coordinates ``(x, y)``.
        distances: ``[..., 4]`` ltrb distances (same units as ``points``), broadcastable with ``points``.
        max_shape: optional ``(h, w)`` (or a tensor ``[..., 2]`` of per-box ``(h, w)``, broadcastable);
            when given, x is clipped to ``[0, w]`` and y to ``[0, h]``.

    Returns:
        ``[..., 4]`` boxes in xyxy, same units as the inputs.
    """
    x1 = points[..., 0] - distances[..., 0]
    y1 = points[..., 1] - distances[..., 1]
    x2 = points[..., 0] + distances[..., 2]
    y2 = points[..., 1] + distances[..., 3]
    if max_shape is not None:
        hw = torch.as_tensor(max_shape, dtype=x1.dtype, device=x1.device)[..., :2]
        h, w = hw[..., 0], hw[..., 1]
        x1, x2 = x1.clamp(min=0).minimum(w), x2.clamp(min=0).minimum(w)
        y1, y2 = y1.clamp(min=0).minimum(h), y2.clamp(min=0).minimum(h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def bbox2distance(points: Tensor, boxes_xyxy: Tensor, max_dist: Optional[float] = None, eps: float = 0.1) -> Tensor:
    """Encode xyxy boxes as ltrb distances from points (inverse of :func:`distance2bbox`).

    Args:
        points: ``[..., 2]`` point coordinates ``(x, y)``.
        boxes_xyxy: ``[..., 4]`` boxes in xyxy, same units as ``points``.
        max_dist: when given, every distance is clamped to ``[0, max_dist - eps]`` so that it stays
            strictly below the last integral bin (GFL passes ``reg_max``). When ``None`` nothing is clamped.
        eps: margin below ``max_dist``. The default 0.1 is what mmdetection 3.x
            (``DistancePointBBoxCoder.encode``) and the GFocal reference code use for GFL's DFL targets.

    Returns:
        ``[..., 4]`` ltrb distances, same units as the inputs.
    """
    left = points[..., 0] - boxes_xyxy[..., 0]
    top = points[..., 1] - boxes_xyxy[..., 1]
    right = boxes_xyxy[..., 2] - points[..., 0]
    bottom = boxes_xyxy[..., 3] - points[..., 1]
    distances = torch.stack((left, top, right, bottom), dim=-1)
    if max_dist is not None:
        distances = distances.clamp(min=0, max=max_dist - eps)
    return distances


def integral_bins(reg_max: int, bin_width: float = 1.0) -> Tensor:
    """The support of GFL's general distribution: ``bin_width * {0, 1, ..., reg_max}``, shape ``[reg_max + 1]``.

    ``bin_width`` is the paper's Delta (1 for GFL), in the same units as the decoded distances.
    """
    return torch.arange(reg_max + 1, dtype=torch.float32) * bin_width


def integral_distance(reg_logits: Tensor, bin_values: Tensor) -> Tensor:
    """Expected ltrb distance of GFL's per-side discrete distributions (the paper's ``Integral``).

    Args:
        reg_logits: ``[..., 4 * (n + 1)]`` logits, side-major: the ``n + 1`` bins of l, then of t, r, b
            (mmdetection's channel layout).
        bin_values: ``[n + 1]`` bin positions, e.g. :func:`integral_bins` (``Delta * {0..n}``).

    Returns:
        ``[..., 4]`` ltrb distances: ``sum_i softmax(logits_side)_i * bin_values_i``, in the units of ``bin_values``.
    """
    num_bins = bin_values.shape[-1]
    if reg_logits.shape[-1] != 4 * num_bins:
        raise ValueError(
            f"integral_distance: reg_logits last dim is {reg_logits.shape[-1]}, expected 4 * {num_bins} "
            f"(4 sides x len(bin_values))"
        )
    # Autocast would run the matmul (and on some devices the softmax) in 16 bits: 8 px of error at stride 128 in bf16.
    with torch.autocast(reg_logits.device.type, enabled=False):
        probs = F.softmax(reg_logits.unflatten(-1, (4, num_bins)), dim=-1)
        return probs @ bin_values.to(probs.dtype)


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU of corresponding (aligned) xyxy boxes: ``iou[..., i] = IoU(boxes1[..., i, :], boxes2[..., i, :])``.

    torchvision's ``box_iou`` only gives the full ``[N, M]`` matrix; the aligned variant avoids building it
    (QFL's IoU targets, ATSS candidates). The union is clamped to ``eps`` like mmdetection's ``bbox_overlaps``,
    and the arithmetic follows the same order, so the values agree bit for bit.

    Args:
        boxes1, boxes2: ``[..., 4]`` xyxy boxes, broadcastable against each other, same units.

    Returns:
        ``[...]`` IoU in ``[0, 1]``.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area1 + area2 - overlap).clamp(min=eps)
    return overlap / union
