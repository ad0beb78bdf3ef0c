"""Dense priors: one point (and one square anchor) per feature-map cell, with mmdetection's conventions.

Level l with stride s has cells (x, y); the prior centre is (x * s, y * s) pixels (mmdetection's centre offset 0, not
the cell centre), and its anchor is the square of side ``octave_base_scale * s`` around it. Priors of all levels are
concatenated level by level, row-major inside a level (x fastest), the order of the flattened head outputs.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

from gfldet.host_tensor import host_tensor

__all__ = ["Priors", "PriorGenerator", "lru_get"]


def lru_get(cache: OrderedDict, key, make, *, size: int):
    """``cache[key]``, made by ``make()`` when missing; the least recently used entries beyond ``size`` go."""
    if key in cache:
        cache.move_to_end(key)
    else:
        cache[key] = make()
        if len(cache) > size:
            cache.popitem(last=False)
    return cache[key]


@dataclass(frozen=True)
class Priors:
    """Priors of all levels for one set of feature-map sizes (P = total number of priors).

    centers_px: [P, 2] (x, y) pixels; anchors_px: [P, 4] xyxy pixels; strides: [P] stride of each prior's level;
    grid_xy: [P, 2] integer cell indices (x, y) within the level; num_per_level: priors per level;
    level_grids: (H_l, W_l, stride_l) per level (lets the ATSS assigner search a window instead of a whole level).
    """

    centers_px: torch.Tensor
    anchors_px: torch.Tensor
    strides: torch.Tensor
    grid_xy: torch.Tensor
    num_per_level: tuple[int, ...]
    level_grids: tuple[tuple[int, int, int], ...]


class PriorGenerator:
    """Computes the priors of a feature pyramid, caching the most recent ``cache_size`` feature-map sizes (per device
    and dtype): multi-scale training sees many batch shapes, so the cache is bounded (least recently used out)."""

    cache_size = 32

    def __init__(self, *, strides: Sequence[int], octave_base_scale: float) -> None:
        self.strides = [int(s) for s in strides]
        self.octave_base_scale = float(octave_base_scale)
        self._cache: OrderedDict[tuple, Priors] = OrderedDict()

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def __call__(self, featmap_sizes: Sequence[tuple[int, int]], *, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> Priors:
        """featmap_sizes: (H_l, W_l) per level -> Priors (cached)."""
        key = (tuple((int(h), int(w)) for h, w in featmap_sizes), torch.device(device), dtype)
        return lru_get(self._cache, key, lambda: self._make(key[0], device=device, dtype=dtype),
                       size=self.cache_size)

    def _make(self, featmap_sizes: tuple[tuple[int, int], ...], *, device, dtype) -> Priors:
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature maps (strides {self.strides}), "
                             f"got {len(featmap_sizes)}")
        grids, strides = [], []
        for (h, w), stride in zip(featmap_sizes, self.strides):
            ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            grids.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1))
            strides.append(torch.full((h * w,), stride, device=device, dtype=dtype))
        grid_xy = torch.cat(grids)
        stride = torch.cat(strides)
        centers = grid_xy.to(dtype) * stride[:, None]
        half = (0.5 * self.octave_base_scale) * stride[:, None]
        anchors = torch.cat([centers - half, centers + half], dim=1)
        return Priors(centers_px=centers, anchors_px=anchors, strides=stride, grid_xy=grid_xy,
                      num_per_level=tuple(h * w for h, w in featmap_sizes),
                      level_grids=tuple((h, w, s) for (h, w), s in zip(featmap_sizes, self.strides)))

    def valid_flags(self, priors: Priors, image_sizes: Sequence[tuple[int, int]], *,
                    pad_size_divisor: int) -> torch.Tensor:
        """Which priors lie on each image's own area -> bool [N, P].

        As mmdetection 3.3: each image's "pad shape" is its own size rounded up to ``pad_size_divisor`` (not the
        batch's padded size); on a level with stride s a cell (x, y) is valid iff x < ceil(pad_w / s) and
        y < ceil(pad_h / s).
        """
        device = priors.grid_xy.device
        pad_hw = host_tensor([[math.ceil(h / pad_size_divisor) * pad_size_divisor,
                              math.ceil(w / pad_size_divisor) * pad_size_divisor] for h, w in image_sizes],
                             dtype=torch.float64, device=device)
        stride = priors.strides.to(torch.float64)
        valid_h = torch.ceil(pad_hw[:, None, 0] / stride)  # [N, P]
        valid_w = torch.ceil(pad_hw[:, None, 1] / stride)
        return (priors.grid_xy[:, 0] < valid_w) & (priors.grid_xy[:, 1] < valid_h)
