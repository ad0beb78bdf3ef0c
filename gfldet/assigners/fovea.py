"""FoveaBox assignment (Kong et al. 2020), batched over the images of a batch.

Level l (stride s) takes the GTs whose scale sqrt(w * h) lies in its ``scale_ranges[l]`` (inclusive; consecutive
ranges overlap, so a GT can be learnt on two levels). A point of that level is positive for such a GT when it lies in
the GT's "fovea", the box shrunk around its centre by ``sigma`` (|x - cx| <= sigma * w / 2 and
|y - cy| <= sigma * h / 2, inclusive); a point in several foveae takes the GT of smallest area, as mmdetection's
FoveaHead (which paints larger GTs first). ``AssignResult.max_iou`` is 0 everywhere (no prior IoU).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import AssignResult, rows_per_prior
from .fcos import smallest_area_gt

__all__ = ["FoveaAssigner"]


class FoveaAssigner:
    """Batched FoveaBox assigner: ``scale_ranges`` per level in px of sqrt(area) (FoveaBox: (1, 64), (32, 128),
    (64, 256), (128, 512), (256, 2048)); ``sigma`` the fovea's shrink factor (0.4)."""

    def __init__(self, *, scale_ranges: Sequence[Sequence[float]], sigma: float) -> None:
        if any(len(r) != 2 or r[0] >= r[1] for r in scale_ranges) or not 0 < sigma <= 1:
            raise ValueError(f"FoveaAssigner: need (low, high) scale ranges with low < high and 0 < sigma <= 1, "
                             f"got {scale_ranges} and {sigma}")
        self.scale_ranges = [(float(lo), float(hi)) for lo, hi in scale_ranges]
        self.sigma = sigma

    @property
    def level_ranges(self) -> list[tuple[float, float]]:
        """One range per pyramid level: ``build_detector`` checks their number against the neck's levels."""
        return self.scale_ranges

    def __repr__(self) -> str:
        return f"FoveaAssigner(scale_ranges={self.scale_ranges}, sigma={self.sigma})"

    @torch.no_grad()
    def assign(self, points: Tensor, num_per_level: Sequence[int], gt_boxes: Tensor, gt_valid: Tensor,
               prior_valid: Tensor | None = None) -> AssignResult:
        """points [P, 2] (x, y) px; gt_boxes [N, G, 4] xyxy px (padded); gt_valid [N, G]; prior_valid [N, P] or
        None -> AssignResult (gt_index [N, P], -1 = background)."""
        if len(num_per_level) != len(self.scale_ranges) or sum(num_per_level) != points.shape[0]:
            raise ValueError(f"FoveaAssigner: {len(self.scale_ranges)} scale ranges, {len(num_per_level)} levels, "
                             f"{points.shape[0]} points (expected sum(num_per_level))")
        ranges = rows_per_prior(self.scale_ranges, num_per_level, like=points)  # [P, 2]
        gt = gt_boxes[:, None, :, :].float()  # [N, 1, G, 4]
        half_w, half_h = (gt[..., 2] - gt[..., 0]) / 2, (gt[..., 3] - gt[..., 1]) / 2
        cx, cy = gt[..., 0] + half_w, gt[..., 1] + half_h
        in_fovea = (((points[None, :, None, 0] - cx).abs() <= self.sigma * half_w)
                    & ((points[None, :, None, 1] - cy).abs() <= self.sigma * half_h))  # [N, P, G]
        scale = (4 * half_w * half_h).sqrt()  # [N, 1, G]
        in_range = (scale >= ranges[None, :, None, 0]) & (scale <= ranges[None, :, None, 1])
        candidate = in_fovea & in_range & gt_valid[:, None, :]
        if prior_valid is not None:
            candidate &= prior_valid[:, :, None]
        gt_index = smallest_area_gt(candidate, 4 * half_w * half_h)
        return AssignResult(gt_index=gt_index, max_iou=torch.zeros_like(gt_index, dtype=points.dtype))
