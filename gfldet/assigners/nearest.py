"""Per pyramid level, the k valid priors nearest to each GT centre, for a batch of images (ATSS's candidates).

Order: ascending Euclidean centre distance (computed as mmdetection does, in float32), ties -> lower prior
index. The float32 bit pattern of a non-negative float orders like the float itself, so packing
``(distance bits << index_bits) | prior index`` into one int64 key gives a total order with that tie rule built
in, and a single ``topk`` does the selection.

Two searches give the same answer:

- exhaustive: every prior of the level (``[N, G, P_l]`` work, any prior layout);
- windowed, for levels laid out as a row-major grid (:class:`LevelGrid`): only the ``(2r + 1)^2`` cells around
  the cell nearest to the GT centre (``r = ceil(sqrt(topk))``), all such levels in one batch. A prior outside
  the window is at least ``(r + 0.5) * stride`` away, so the window's answer is exact when its k-th distance is
  below that bound; GTs that fail this certificate (window clipped by invalid priors or the grid border,
  GT centre far outside the grid) are redone exhaustively, one by one. Deciding that costs one host
  synchronisation per call.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from gfldet.host_tensor import host_tensor

__all__ = ["LevelGrid", "nearest_priors"]

# Safety margin (in cells) between a certified k-th distance and the window bound, far above the float32
# rounding of the centre -> cell computation.
_CERTIFICATE_MARGIN = 0.01


class LevelGrid(NamedTuple):
    """Layout of one level's priors: ``height x width`` cells, row-major (x fastest), centres at
    ``first prior's centre + (x, y) * stride`` (pixels; any meshgrid: a centre's x depends only on its
    column, its y only on its row)."""

    height: int
    width: int
    stride: float


def _index_bits(num_priors: int) -> int:
    return max(1, (num_priors - 1).bit_length())


def _smallest_keys(distances: Tensor, index: Tensor, index_bits: int, k: int) -> Tensor:
    """The k smallest ``(distance, index)`` int64 keys along the last dim, ascending."""
    keys = torch.add(index, distances.view(torch.int32).long(), alpha=1 << index_bits)
    return keys.topk(k, dim=-1, largest=False, sorted=True).values


def _distances(prior_x: Tensor, prior_y: Tensor, gt_x: Tensor, gt_y: Tensor) -> Tensor:
    dx, dy = prior_x - gt_x, prior_y - gt_y
    return (dx * dx + dy * dy).sqrt()


def _exhaustive(prior_x: Tensor, prior_y: Tensor, gt_x: Tensor, gt_y: Tensor, level_valid: Tensor, k: int) -> Tensor:
    """Level-local indices ``[N, G, k]`` searched among all ``P_l`` priors (invalid ones sort last)."""
    num_priors = prior_x.shape[0]
    distances = _distances(prior_x, prior_y, gt_x[..., None], gt_y[..., None])  # [N, G, P_l]
    distances = distances.masked_fill(~level_valid[:, None, :], float("inf"))
    index = torch.arange(num_priors, device=prior_x.device)
    bits = _index_bits(num_priors)
    return _smallest_keys(distances, index, bits, k) & ((1 << bits) - 1)


def _window_radius(k: int) -> int:
    """Half-width of the search window. On a grid the k nearest cells to any point lie within about
    ``sqrt(k)`` cells (for k = 9 at most 2.83, even for a GT centre on a corner cell of the valid area), and every cell
    outside a radius-r window is at least ``r + 0.5`` cells away."""
    return math.ceil(math.sqrt(k))


def _windowed(
    prior_x: Tensor, prior_y: Tensor, gt_x: Tensor, gt_y: Tensor, prior_valid: Tensor, valid_k: Tensor,
    starts: Sequence[int], grids: Sequence[LevelGrid], k: int,
) -> tuple[Tensor, Tensor]:
    """Windowed search of L grid levels at once.

    ``valid_k [N, L]`` -> global prior indices ``[N, G, L, k]`` and ``certified [N, G, L]``. On a grid a
    cell's centre x depends only on its column and y only on its row, so the squared distances are the
    broadcast sum of per-column and per-row terms (the same float32 values as the element-wise formula).
    """
    device, num_images = prior_x.device, gt_x.shape[0]
    radius = _window_radius(k)
    height, width, stride, start = (
        host_tensor(values, device=device)
        for values in zip(*[(g.height, g.width, g.stride, s) for g, s in zip(grids, starts)])
    )
    stride = stride.to(prior_x.dtype)
    # cell nearest to the GT centre, [N, G, L]; clamped so that far-away GTs stay in integer range
    col = ((gt_x[..., None] - prior_x.index_select(0, start)) / stride).round()
    row = ((gt_y[..., None] - prior_y.index_select(0, start)) / stride).round()
    col = torch.minimum(col.clamp(min=-radius - 1), (width + radius).to(col.dtype)).long()
    row = torch.minimum(row.clamp(min=-radius - 1), (height + radius).to(row.dtype)).long()
    offsets = torch.arange(-radius, radius + 1, device=device)
    cols = col[..., None, None] + offsets  # [N, G, L, 1, 2r+1]
    rows = row[..., None, None] + offsets[:, None]  # [N, G, L, 2r+1, 1]
    w, h, level_start = width[:, None, None], height[:, None, None], start[:, None, None]
    col_on_grid, row_on_grid = (cols >= 0) & (cols < w), (rows >= 0) & (rows < h)
    cols, rows = torch.minimum(cols.clamp(min=0), w - 1), torch.minimum(rows.clamp(min=0), h - 1)
    # off-grid cells get an infinite distance through their row or column term
    dx = prior_x.index_select(0, (level_start + cols).flatten()).view_as(cols) - gt_x[..., None, None, None]
    dy = prior_y.index_select(0, (level_start + rows * w).flatten()).view_as(rows) - gt_y[..., None, None, None]
    dx, dy = dx.masked_fill(~col_on_grid, float("inf")), dy.masked_fill(~row_on_grid, float("inf"))
    distances = (dx * dx + dy * dy).sqrt().flatten(-2)  # [N, G, L, S], as _distances computes them
    index = (level_start + rows * w + cols).flatten(-2)  # into all priors
    usable = prior_valid.gather(1, index.view(num_images, -1)).view_as(index)
    bits = _index_bits(prior_x.shape[0])
    keys = _smallest_keys(distances.masked_fill(~usable, float("inf")), index, bits, k)  # [N, G, L, k]
    kth_slot = (valid_k - 1).clamp(min=0)[:, None, :, None].expand(*keys.shape[:3], 1)
    kth_distance = (keys.gather(-1, kth_slot)[..., 0] >> bits).to(torch.int32).view(torch.float32)
    certified = (kth_distance < (radius + 0.5 - _CERTIFICATE_MARGIN) * stride) | (valid_k == 0)[:, None, :]
    return keys & ((1 << bits) - 1), certified


def _redo_uncertified(
    found: Tensor, certified: Tensor, prior_x: Tensor, prior_y: Tensor, gt_x: Tensor, gt_y: Tensor,
    prior_valid: Tensor, start: int, size: int, k: int,
) -> Tensor:
    """Replace the windowed result ``found [N, G, k]`` of one level by the exhaustive one where not
    ``certified [N, G]``; each uncertified GT is searched on its own (as a one-GT "image")."""
    image, gt = (~certified).nonzero(as_tuple=True)
    level = slice(start, start + size)
    redone = _exhaustive(
        prior_x[level], prior_y[level], gt_x[image, gt][:, None], gt_y[image, gt][:, None], prior_valid[image, level], k
    )
    return found.index_put((image, gt), redone[:, 0] + start)


def nearest_priors(
    prior_x: Tensor, prior_y: Tensor, num_priors_per_level: Sequence[int], gt_x: Tensor, gt_y: Tensor,
    prior_valid: Tensor, topk: int, *, grids: Optional[Sequence[Optional[LevelGrid]]] = None,
    needed: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """ATSS candidates: per level, the ``k = min(topk, valid priors of the level in that image)`` nearest.

    Args:
        prior_x, prior_y: ``[P]`` prior centres (pixels), levels concatenated.
        num_priors_per_level: priors per level, summing to ``P``.
        gt_x, gt_y: ``[N, G]`` GT centres (pixels).
        prior_valid: ``[N, P]`` bool, usable priors per image.
        topk: candidates per level.
        grids: optional :class:`LevelGrid` per level (None entries: no grid); enables the windowed search.
        needed: ``[N, G]`` bool, GTs whose candidates matter (default all); the others (padding) never trigger
            the exhaustive fallback.

    Returns:
        ``candidates [N, G, K]`` int64 indices into the priors, level by level, nearest first within a level
        (``K = sum_l min(topk, P_l)``), and ``is_candidate [N, G, K]`` bool, False for the slots beyond an
        image's own k of that level (their indices are unspecified).
    """
    starts = [sum(num_priors_per_level[:i]) for i in range(len(num_priors_per_level))]
    grids = grids if grids is not None else [None] * len(num_priors_per_level)
    radius = _window_radius(topk)
    windowed = [
        i for i, (size, grid) in enumerate(zip(num_priors_per_level, grids))
        if grid is not None and (2 * radius + 1) ** 2 < size
    ]
    valid_k = torch.stack(
        [prior_valid[:, s : s + n].count_nonzero(dim=-1) for s, n in zip(starts, num_priors_per_level)], dim=-1
    ).clamp(max=topk)  # [N, L]

    def exhaustive(level: int) -> Tensor:
        s, n = starts[level], num_priors_per_level[level]
        k = min(topk, n)
        return _exhaustive(prior_x[s : s + n], prior_y[s : s + n], gt_x, gt_y, prior_valid[:, s : s + n], k) + s

    per_level = {}
    if windowed:
        found, certified = _windowed(
            prior_x, prior_y, gt_x, gt_y, prior_valid,
            valid_k.index_select(1, host_tensor(windowed, device=valid_k.device)),
            [starts[i] for i in windowed], [grids[i] for i in windowed], topk,
        )
        if needed is not None:
            certified = certified | ~needed[..., None]
        level_certified = certified.flatten(0, 1).all(dim=0).tolist()  # the one host synchronisation
        for j, level in enumerate(windowed):
            per_level[level] = found[:, :, j]
            if not level_certified[j]:
                per_level[level] = _redo_uncertified(
                    found[:, :, j], certified[..., j], prior_x, prior_y, gt_x, gt_y, prior_valid,
                    starts[level], num_priors_per_level[level], topk,
                )
    candidates, is_candidate = [], []
    for level, size in enumerate(num_priors_per_level):
        k = min(topk, size)
        if k == 0:
            continue
        candidates.append(per_level[level] if level in per_level else exhaustive(level))
        is_candidate.append(torch.arange(k, device=prior_x.device) < valid_k[:, level, None, None])
    num_images, num_gts = gt_x.shape
    return torch.cat(candidates, dim=-1), torch.cat(is_candidate, dim=-1).expand(num_images, num_gts, -1)
