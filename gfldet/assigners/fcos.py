"""FCOS assignment (Tian et al. 2019) with centre sampling, batched over the images of a batch.

A point (prior centre) is a candidate for a GT when
1. it lies inside the GT box, or, with centre sampling, inside the GT's central region: the square of half-side
   ``center_sample_radius x stride`` around the GT centre, clipped to the GT box (strictly inside: every distance
   to the region's sides > 0);
2. its largest distance to the GT sides, max(l, t, r, b), lies in its level's ``regress_ranges`` (inclusive);
3. it is valid (inside its image) and the GT is real (not padding).
A point with several candidate GTs takes the one of smallest area (the lowest index on equal areas), as
mmdetection's FCOSHead. There is no prior IoU in FCOS: ``AssignResult.max_iou`` is 0 everywhere.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import AssignResult, rows_per_prior

__all__ = ["FCOSAssigner", "smallest_area_gt"]


def smallest_area_gt(candidate: Tensor, area: Tensor) -> Tensor:
    """For candidate matrix ``[N, P, G]`` bool and GT areas ``[N, 1, G]``: per point the candidate GT of smallest
    area (lowest index on ties) -> ``[N, P]`` int64, -1 where there is none."""
    if candidate.shape[-1] == 0:
        return torch.full(candidate.shape[:2], -1, dtype=torch.long, device=candidate.device)
    min_area, index = area.expand_as(candidate).masked_fill(~candidate, float("inf")).min(dim=-1)
    return torch.where(torch.isfinite(min_area), index, -1)


class FCOSAssigner:
    """Batched FCOS assigner.

    Args:
        regress_ranges: per pyramid level ``(low, high)`` in pixels for max(l, t, r, b) (FCOS: (-1, 64),
            (64, 128), (128, 256), (256, 512), (512, inf); ``.inf`` in YAML).
        center_sampling: restrict positives to the GT's central region.
        center_sample_radius: half-side of that region in strides (FCOS: 1.5).
    """

    def __init__(self, *, regress_ranges: Sequence[Sequence[float]], center_sampling: bool,
                 center_sample_radius: float) -> None:
        if any(len(r) != 2 or r[0] >= r[1] for r in regress_ranges):
            raise ValueError(f"FCOSAssigner: regress_ranges must be (low, high) pairs with low < high, "
                             f"got {regress_ranges}")
        self.regress_ranges = [(float(lo), float(hi)) for lo, hi in regress_ranges]
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius

    @property
    def level_ranges(self) -> list[tuple[float, float]]:
        """One range per pyramid level: ``build_detector`` checks their number against the neck's levels."""
        return self.regress_ranges

    def __repr__(self) -> str:
        return (f"FCOSAssigner(regress_ranges={self.regress_ranges}, center_sampling={self.center_sampling}, "
                f"center_sample_radius={self.center_sample_radius})")

    def _ranges(self, num_per_level: Sequence[int], like: Tensor) -> Tensor:
        """Per-point (low, high) ``[P, 2]``."""
        if len(num_per_level) != len(self.regress_ranges):
            raise ValueError(f"FCOSAssigner: {len(self.regress_ranges)} regress ranges for "
                             f"{len(num_per_level)} pyramid levels")
        return rows_per_prior(self.regress_ranges, num_per_level, like=like)

    @torch.no_grad()
    def assign(self, points: Tensor, strides: Tensor, num_per_level: Sequence[int], gt_boxes: Tensor,
               gt_valid: Tensor, prior_valid: Tensor | None = None) -> AssignResult:
        """points [P, 2] (x, y) px; strides [P]; gt_boxes [N, G, 4] xyxy px (padded); gt_valid [N, G];
        prior_valid [N, P] or None -> AssignResult (gt_index [N, P], -1 = background)."""
        num_images, num_gts = gt_boxes.shape[:2]
        if points.shape != (strides.shape[0], 2) or sum(num_per_level) != points.shape[0]:
            raise ValueError(f"FCOSAssigner: points must be [P, 2] with P = sum(num_per_level), strides [P]; got "
                             f"{tuple(points.shape)}, {tuple(strides.shape)}, {sum(num_per_level)}")
        ranges = self._ranges(num_per_level, points)
        empty = torch.full((num_images, points.shape[0]), -1, dtype=torch.long, device=points.device)
        if num_gts == 0:
            return AssignResult(gt_index=empty, max_iou=torch.zeros_like(empty, dtype=points.dtype))
        x, y = points[None, :, None, 0], points[None, :, None, 1]  # [1, P, 1]
        gt = gt_boxes[:, None, :, :].float()  # [N, 1, G, 4]
        ltrb = torch.stack([x - gt[..., 0], y - gt[..., 1], gt[..., 2] - x, gt[..., 3] - y], dim=-1)
        inside = self._inside_region(x, y, gt, strides) if self.center_sampling else ltrb.min(dim=-1).values > 0
        largest = ltrb.max(dim=-1).values  # [N, P, G]
        in_range = (largest >= ranges[None, :, None, 0]) & (largest <= ranges[None, :, None, 1])
        candidate = inside & in_range & gt_valid[:, None, :]
        if prior_valid is not None:
            candidate &= prior_valid[:, :, None]
        gt_index = smallest_area_gt(candidate, (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1]))
        return AssignResult(gt_index=gt_index, max_iou=torch.zeros_like(gt_index, dtype=points.dtype))

    def _inside_region(self, x: Tensor, y: Tensor, gt: Tensor, strides: Tensor) -> Tensor:
        """[N, P, G]: the point lies strictly inside the GT's central region clipped to the GT."""
        radius = (strides.float() * self.center_sample_radius)[None, :, None]  # [1, P, 1]
        cx, cy = (gt[..., 0] + gt[..., 2]) / 2, (gt[..., 1] + gt[..., 3]) / 2
        x1, y1 = torch.maximum(cx - radius, gt[..., 0]), torch.maximum(cy - radius, gt[..., 1])
        x2, y2 = torch.minimum(cx + radius, gt[..., 2]), torch.minimum(cy + radius, gt[..., 3])
        return torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=-1).min(dim=-1).values > 0
