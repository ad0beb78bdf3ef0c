"""Dense-detector post-processing: per-level score threshold + top-k, decode, clip, rescale, class-aware NMS.

The order is mmdetection 3.3's (``_predict_by_feat_single`` then ``_bbox_post_process``): per level keep the
(prior, class) pairs whose class probability is above ``score_thr``, at most ``nms_pre`` of them (best first);
decode and clip those boxes to the resized image; concatenate levels; multiply the scores by the head's per-prior
score factors if it has any (a quality branch: ATSS's and FCOS's centerness); rescale to the original image; drop
boxes not wider and taller than ``min_bbox_size`` (a negative value disables this); class-aware NMS; keep the best
``max_per_img``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torchvision.ops import batched_nms

from gfldet.host_tensor import host_tensor

__all__ = ["PostProcessConfig", "select_candidates", "postprocess"]

# decode(reg [K, R], priors index [K], image index [K]) -> boxes [K, 4] xyxy px clipped to the resized image
DecodeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PostProcessConfig:
    """Inference settings (the ``model.test_cfg`` section).

    score_thr: minimum class score of a kept (prior, class) pair; nms_pre: at most this many pairs per level and
    image (-1: all); nms_iou: IoU threshold of class-aware NMS; max_per_img: detections returned per image;
    min_bbox_size: boxes must be wider and taller than this (original px), negative disables the check.
    """

    score_thr: float
    nms_pre: int
    nms_iou: float
    max_per_img: int
    min_bbox_size: float


def select_candidates(scores: torch.Tensor, num_per_level: Sequence[int], *, score_thr: float,
                      nms_pre: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and level, the (prior, class) pairs with score > score_thr, at most nms_pre, best first.

    scores: [N, P, C] probabilities. Returns image index [K], prior index [K] (into P), label [K] (0..C-1) and
    score [K], image by image; within an image level by level, each level sorted by decreasing score. The
    threshold is applied once, to all levels' top-k together: one host synchronisation per call.
    """
    num_images, _, num_classes = scores.shape
    top_scores, top_priors, top_labels, start = [], [], [], 0
    for count in num_per_level:
        level = scores[:, start:start + count].reshape(num_images, -1)
        k = level.shape[1] if nms_pre < 0 else min(nms_pre, level.shape[1])
        level_scores, index = level.topk(k, dim=1)  # [N, k]
        top_scores.append(level_scores)
        top_priors.append(start + index // num_classes)
        top_labels.append(index % num_classes)
        start += count
    top_scores = torch.cat(top_scores, dim=1)  # [N, sum of k]
    image_idx, column = (top_scores > score_thr).nonzero(as_tuple=True)  # row-major: image by image
    return (image_idx, torch.cat(top_priors, dim=1)[image_idx, column], torch.cat(top_labels, dim=1)[image_idx, column],
            top_scores[image_idx, column])


def postprocess(scores: torch.Tensor, reg: torch.Tensor, num_per_level: Sequence[int], decode: DecodeFn,
                scale_factors: Sequence[tuple[float, float]], cfg: PostProcessConfig, *,
                score_factors: torch.Tensor | None = None) -> list[dict[str, torch.Tensor]]:
    """Detections per image from flattened head outputs.

    scores: [N, P, C] class probabilities; reg: [N, P, R] regression outputs; decode maps the candidates' reg
    rows to boxes in resized-image pixels (clipped to the image); scale_factors: per image (sx, sy) of the resize;
    score_factors: optional [N, P] per-prior factors of the selected candidates' scores (NMS ranks the products).
    Returns per image {'boxes': [K, 4] xyxy original px, 'scores': [K], 'labels': [K] int64, 'prior_idx': [K]
    int64 index (into P) of the prior behind each detection}, best first.
    Host synchronisations: 3 for the batch (candidates, size filter, per-image counts) and NMS's own per image.
    """
    image_idx, prior_idx, labels, cand_scores = select_candidates(
        scores, num_per_level, score_thr=cfg.score_thr, nms_pre=cfg.nms_pre)
    boxes = decode(reg[image_idx, prior_idx], prior_idx, image_idx)
    if score_factors is not None:
        cand_scores = cand_scores * score_factors[image_idx, prior_idx]
    # multiply by the reciprocal (as mmdetection's scale_boxes) rather than divide: identical float32 results
    inv_scale = host_tensor([[1 / sx, 1 / sy, 1 / sx, 1 / sy] for sx, sy in scale_factors], dtype=boxes.dtype,
                            device=boxes.device)
    boxes = boxes * inv_scale[image_idx]
    if cfg.min_bbox_size >= 0:
        wh = boxes[:, 2:] - boxes[:, :2]
        big = (wh > cfg.min_bbox_size).all(dim=1).nonzero().squeeze(1)
        image_idx, prior_idx, labels, cand_scores, boxes = (
            t.index_select(0, big) for t in (image_idx, prior_idx, labels, cand_scores, boxes))
    # candidates come image by image; index_add_ rather than bincount, which on a GPU also waits to size its output
    ones = torch.ones_like(image_idx)
    per_image = image_idx.new_zeros(scores.shape[0]).index_add_(0, image_idx, ones).tolist()
    results = []
    for b, s, lab, prior in zip(*(t.split(per_image) for t in (boxes, cand_scores, labels, prior_idx))):
        keep = batched_nms(b, s, lab, cfg.nms_iou)[: cfg.max_per_img]
        results.append({"boxes": b[keep], "scores": s[keep], "labels": lab[keep], "prior_idx": prior[keep]})
    return results
