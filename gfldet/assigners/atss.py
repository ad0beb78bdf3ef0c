"""Adaptive Training Sample Selection (ATSS, Zhang et al. 2020), batched over the images of a batch.

Semantics are those of mmdetection 3.3's ``ATSSAssigner`` as GFL/ATSS heads call it (invalid priors dropped
first, then ATSS on the remaining ones):

1. per level and GT, the ``k = min(topk, valid priors of that level in that image)`` valid priors whose
   centres are nearest to the GT centre (Euclidean) are candidates;
2. threshold per GT = mean + unbiased std of the candidates' IoUs;
3. a candidate is positive if its IoU >= threshold and its centre lies inside the GT with every ltrb distance
   > ``inside_eps``;
4. a prior that is positive for several GTs goes to the GT with the highest IoU (the lowest GT index on equal
   IoU, like ``torch.max``).

Ties in centre distance are broken by the lower prior index (deterministic on every device). ``torch.topk``
leaves ties unspecified, so mmdetection's choice among exactly equidistant priors at the k-th place depends on
its backend: grid-aligned GT boxes can then get different candidates. The candidates' IoU mean and std are
computed with masks, so the threshold may differ from mmdetection's ``mean(0) + std(0)`` in the last bit;
only a candidate whose IoU equals the threshold to the last bit could flip.

No Python loop over images or GTs. Without ``level_grids`` there is no host-device synchronisation; with them
(the fast windowed nearest-prior search of :mod:`gfldet.assigners.nearest`), one per call.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ..box_coding import aligned_box_iou
from .base import AssignResult
from .nearest import LevelGrid, nearest_priors

__all__ = ["ATSSAssigner", "assign_per_image"]


def _box_centres(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Centre x and y ``[...]`` of xyxy boxes ``[..., 4]``."""
    return (boxes[..., 0] + boxes[..., 2]) / 2.0, (boxes[..., 1] + boxes[..., 3]) / 2.0


class ATSSAssigner:
    """Batched ATSS assigner (see the module docstring for the exact rule).

    Args:
        topk: candidates per level and GT (9 in ATSS/GFL).
        inside_eps: a candidate's centre must be farther than this from every GT side (pixels; 0.01 in
            ATSS/GFL).
    """

    def __init__(self, *, topk: int = 9, inside_eps: float = 0.01) -> None:
        if topk < 1:
            raise ValueError(f"ATSSAssigner: topk must be >= 1, got {topk}")
        self.topk = topk
        self.inside_eps = inside_eps

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, inside_eps={self.inside_eps})"

    @torch.no_grad()
    def assign(
        self,
        priors: Tensor,
        num_priors_per_level: Sequence[int],
        gt_boxes: Tensor,
        gt_valid: Tensor,
        prior_valid: Optional[Tensor] = None,
        *,
        level_grids: Optional[Sequence[tuple[int, int, float]]] = None,
    ) -> AssignResult:
        """Assign every prior of every image to one of its GTs or to the background.

        Args:
            priors: ``[P, 4]`` xyxy prior boxes in pixels, all levels concatenated (level-major), shared by
                all images.
            num_priors_per_level: priors in each level, summing to ``P``.
            gt_boxes: ``[N, G, 4]`` xyxy GT boxes in pixels, padded (see :func:`pad_gt_boxes`).
            gt_valid: ``[N, G]`` bool, False for padding.
            prior_valid: ``[N, P]`` bool, False for priors outside an image's own (unpadded) area; they are
                never candidates nor positives. None = all valid.
            level_grids: optional ``(height, width, stride)`` per level when each level's priors are a row-major
                grid (x fastest) with centres ``first centre + (x, y) * stride``, as GFL's priors are. The
                nearest-prior search then looks at a window around each GT instead of the whole level (same
                result, far less work; one host synchronisation decides whether some GT needs the exhaustive
                search).

        Returns:
            :class:`AssignResult` with ``gt_index [N, P]`` (-1 = background) and ``max_iou [N, P]``.
        """
        num_images, num_gts = gt_boxes.shape[:2]
        prior_valid = self._check_inputs(priors, num_priors_per_level, gt_boxes, gt_valid, prior_valid)
        num_priors = priors.shape[0]
        if num_gts == 0 or num_priors == 0:
            return AssignResult(
                gt_index=torch.full((num_images, num_priors), -1, dtype=torch.long, device=priors.device),
                max_iou=priors.new_zeros((num_images, num_priors)),
            )
        priors, gt_boxes = priors.float(), gt_boxes.float()
        grids = self._check_grids(level_grids, num_priors_per_level)
        candidates, is_candidate = self._candidates(
            priors, num_priors_per_level, grids, gt_boxes, gt_valid, prior_valid
        )
        candidate_priors = priors.index_select(0, candidates.flatten()).view(*candidates.shape, 4)
        candidate_iou = aligned_box_iou(candidate_priors, gt_boxes[:, :, None, :])
        is_positive = (
            is_candidate
            & (candidate_iou >= self._iou_threshold(candidate_iou, is_candidate))
            & self._centre_inside(candidate_priors, gt_boxes)
            & gt_valid[:, :, None]
        )
        return self._resolve(candidates, candidate_iou, is_positive, num_priors)

    @staticmethod
    def _check_inputs(priors, num_priors_per_level, gt_boxes, gt_valid, prior_valid) -> Tensor:
        """Validate shapes (no value checks: they would synchronise); returns ``prior_valid [N, P]``."""
        num_images, num_gts = gt_boxes.shape[:2]
        if priors.dim() != 2 or priors.shape[1] != 4 or sum(num_priors_per_level) != priors.shape[0]:
            raise ValueError(
                f"ATSSAssigner: priors must be [P, 4] with P = sum(num_priors_per_level) = "
                f"{sum(num_priors_per_level)}, got {tuple(priors.shape)}"
            )
        if gt_boxes.dim() != 3 or gt_boxes.shape[2] != 4 or gt_valid.shape != (num_images, num_gts):
            raise ValueError(
                f"ATSSAssigner: expected gt_boxes [N, G, 4] and gt_valid [N, G], got {tuple(gt_boxes.shape)} "
                f"and {tuple(gt_valid.shape)} (use gfldet.assigners.pad_gt_boxes)"
            )
        if prior_valid is None:
            return torch.ones((num_images, priors.shape[0]), dtype=torch.bool, device=priors.device)
        if prior_valid.shape != (num_images, priors.shape[0]):
            raise ValueError(
                f"ATSSAssigner: prior_valid must be [N, P] = {(num_images, priors.shape[0])}, "
                f"got {tuple(prior_valid.shape)}"
            )
        return prior_valid

    @staticmethod
    def _check_grids(level_grids, num_priors_per_level) -> list[Optional[LevelGrid]]:
        if level_grids is None:
            return [None] * len(num_priors_per_level)
        grids = [LevelGrid(int(h), int(w), float(s)) for h, w, s in level_grids]
        if [g.height * g.width for g in grids] != list(num_priors_per_level):
            raise ValueError(
                f"ATSSAssigner: level_grids {[tuple(g) for g in grids]} do not match num_priors_per_level "
                f"{list(num_priors_per_level)} (height * width per level)"
            )
        return grids

    def _candidates(
        self,
        priors: Tensor,
        num_priors_per_level: Sequence[int],
        grids: Sequence[Optional[LevelGrid]],
        gt_boxes: Tensor,
        gt_valid: Tensor,
        prior_valid: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Per level, the valid priors nearest to each GT centre: ``candidates [N, G, K]`` (indices into
        ``priors``) and ``is_candidate [N, G, K]`` (see :func:`~gfldet.assigners.nearest.nearest_priors`)."""
        prior_x, prior_y = _box_centres(priors)
        gt_x, gt_y = _box_centres(gt_boxes)
        return nearest_priors(
            prior_x, prior_y, num_priors_per_level, gt_x, gt_y, prior_valid, self.topk, grids=grids, needed=gt_valid
        )

    @staticmethod
    def _iou_threshold(candidate_iou: Tensor, is_candidate: Tensor) -> Tensor:
        """Mean + unbiased std of each GT's candidate IoUs -> ``[N, G, 1]`` (NaN with < 2 candidates, as
        ``torch.std`` gives, which makes every comparison False)."""
        count = is_candidate.sum(dim=-1, keepdim=True)
        iou = candidate_iou.masked_fill(~is_candidate, 0.0)
        mean = iou.sum(dim=-1, keepdim=True) / count
        squared = ((candidate_iou - mean) ** 2).masked_fill(~is_candidate, 0.0)
        return mean + (squared.sum(dim=-1, keepdim=True) / (count - 1)).sqrt()

    def _centre_inside(self, candidate_priors: Tensor, gt_boxes: Tensor) -> Tensor:
        """``[N, G, K]``: the candidate's centre is inside its GT with min(l, t, r, b) > ``inside_eps``."""
        cx, cy = _box_centres(candidate_priors)
        gt = gt_boxes[:, :, None, :]
        ltrb = torch.stack((cx - gt[..., 0], cy - gt[..., 1], gt[..., 2] - cx, gt[..., 3] - cy), dim=-1)
        return ltrb.amin(dim=-1) > self.inside_eps

    @staticmethod
    def _resolve(candidates: Tensor, candidate_iou: Tensor, is_positive: Tensor, num_priors: int) -> AssignResult:
        """Give each prior to its highest-IoU positive GT (lowest GT index on equal IoU).

        A scatter-max of the int64 key ``(iou_bits << gt_bits) | (G - 1 - g)`` (IoU >= 0, so its float32 bits
        order like the float) over the candidates finds each prior's winner without an ``[N, P, G]`` matrix;
        the outputs are then written from the (few) winning candidates.
        """
        num_images, num_gts = candidates.shape[:2]
        gt_bits = max(1, (num_gts - 1).bit_length())
        gt = torch.arange(num_gts, device=candidates.device)[None, :, None].expand_as(candidates)
        keys = (candidate_iou.view(torch.int32).long() << gt_bits) | (num_gts - 1 - gt)
        keys = keys.masked_fill(~is_positive, -1).flatten()
        flat_index = (candidates + torch.arange(num_images, device=candidates.device)[:, None, None] * num_priors)
        flat_index = flat_index.flatten()
        best = torch.full((num_images * num_priors,), -1, dtype=torch.long, device=candidates.device)
        best.scatter_reduce_(0, flat_index, keys, reduce="amax")
        won = (keys >= 0) & (best.gather(0, flat_index) == keys)
        gt_index = best.fill_(-1).scatter_reduce_(0, flat_index, gt.flatten().masked_fill(~won, -1), "amax")
        max_iou = candidate_iou.new_zeros(best.shape)
        max_iou.scatter_reduce_(0, flat_index, candidate_iou.flatten().masked_fill(~won, 0.0), "amax")
        return AssignResult(gt_index=gt_index.view(num_images, -1), max_iou=max_iou.view(num_images, -1))


def assign_per_image(
    assigner: ATSSAssigner,
    priors: Tensor,
    num_priors_per_level: Sequence[int],
    gt_boxes: Sequence[Tensor],
    prior_valid: Optional[Tensor] = None,
    *,
    level_grids: Optional[Sequence[tuple[int, int, float]]] = None,
) -> AssignResult:
    """Reference path: the same assigner run on one image at a time (for tests and the benchmark).

    Args:
        gt_boxes: N tensors ``[G_i, 4]`` xyxy pixels (no padding).
        Other arguments as in :meth:`ATSSAssigner.assign`.
    """
    results = []
    for i, boxes in enumerate(gt_boxes):
        valid = torch.ones((1, boxes.shape[0]), dtype=torch.bool, device=boxes.device)
        image_prior_valid = None if prior_valid is None else prior_valid[i : i + 1]
        results.append(
            assigner.assign(
                priors, num_priors_per_level, boxes[None], valid, image_prior_valid, level_grids=level_grids
            )
        )
    return AssignResult(
        gt_index=torch.cat([r.gt_index for r in results]), max_iou=torch.cat([r.max_iou for r in results])
    )
