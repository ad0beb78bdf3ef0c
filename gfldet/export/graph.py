"""Export-friendly views of a detector: the modules that ``torch.onnx.export`` / ``torch.jit.trace`` record.

Three views, from least to most work done inside the graph (input: ``images`` [N, 3, H, W] float32, normalised
like the training data and padded to the size divisor; every size may be dynamic):

- :class:`RawOutputs`: per level, cls logits [N, A*C, H_l, W_l] then regression outputs [N, A*R, H_l, W_l] (GFL:
  R = 4*(reg_max+1) distribution logits; mmdetection's layout, exactly ``Detector.raw_outputs``).
- :class:`DecodedOutputs`: ``scores`` [N, P, C] ranking scores (class probabilities, times the quality branch's
  where the head has one) and ``boxes`` [N, P, 4] xyxy input pixels, one row per prior (P = sum_l H_l * W_l * A,
  A anchors per location), not clipped, no threshold.
- :class:`Detections`: one image ([1, 3, H, W]); the head's post-processing (per-level score threshold + top-k,
  decode, clip to the input, ``min_bbox_size`` in input px (``predict``: original-image px; the same
  with the default 0), class-aware NMS, best ``max_per_img``) -> ``boxes`` [K, 4] xyxy input px,
  ``scores`` [K], ``labels`` [K] int64, best first.

Every view works for every dense head: scores and boxes come from the same head hooks as ``head.predict``
(``flat_outputs``, and ``decode_level_rows``, by default ``decode_rows``), so a quality branch (ATSS / FCOS) and
anchor deltas (RetinaNet, SSD) are exported as predicted. Priors are rebuilt level by level from the traced
feature-map shapes (not the head's cache, whose sizes are Python ints), so the graph stays valid for any input
size; they follow :mod:`gfldet.models.priors` (cell (x, y) at (x * stride, y * stride)), and the head derives any
anchor from cell, stride, prior index and level (``level_num_anchors`` priors per location).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.ops import batched_nms


__all__ = ["RawOutputs", "DecodedOutputs", "Detections", "VIEWS", "output_names"]


def level_centers(feat: torch.Tensor, stride: int) -> torch.Tensor:
    """Prior centres [H_l * W_l, 2] (x, y) in input pixels of a level map [N, K, H_l, W_l], row-major.

    Built with ``arange`` on the traced size, so the exported graph recomputes them for every input size.
    """
    height, width = feat.shape[-2:]
    index = torch.arange(height * width, device=feat.device)
    return torch.stack([index % width, index // width], dim=1).to(feat.dtype) * stride


def level_priors(feat: torch.Tensor, stride: int, num_anchors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell origins [H_l * W_l * A, 2] (x * stride, y * stride) px and strides [H_l * W_l * A] of a level's priors,
    order (y, x, anchor); a head whose prior centre is elsewhere in the cell places it in ``decode_level_rows``."""
    centers = level_centers(feat, stride)
    if num_anchors > 1:
        centers = centers.repeat_interleave(num_anchors, dim=0)
    return centers, torch.full_like(centers[:, 0], stride)


class RawOutputs(nn.Module):
    """``images`` -> (cls logits of each level..., regression outputs of each level...)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls_scores, bbox_preds = self.detector.raw_outputs(images)
        return (*cls_scores, *bbox_preds)


class DecodedOutputs(RawOutputs):
    """``images`` -> (scores [N, P, C] ranking scores, boxes [N, P, 4] xyxy input px) for every prior.

    Scores and boxes come from the head's own hooks, level by level (``flat_outputs``: class probabilities, times a
    quality branch where there is one; ``decode_level_rows``: distances or anchor deltas), as in ``head.predict``.
    """

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.detector.head
        cls_scores, bbox_preds = self.detector.raw_outputs(images)
        scores, boxes = [], []
        for level, (cls_map, reg_map) in enumerate(zip(cls_scores, bbox_preds)):
            level_scores, factors, reg = head.flat_outputs([cls_map], [reg_map])  # [N, P_l, C], [N, P_l], [N, P_l, R]
            scores.append(level_scores if factors is None else level_scores * factors[..., None])
            cells, strides = self._level_priors(cls_map, level)
            prior_idx = torch.arange(strides.shape[0], device=strides.device)
            boxes.append(head.decode_level_rows(reg, cells, strides, prior_idx, level))
        return torch.cat(scores, dim=1), torch.cat(boxes, dim=1)

    def _level_priors(self, level_map: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``level_priors`` of pyramid level ``level`` with the head's stride and priors per location there."""
        head = self.detector.head
        return level_priors(level_map, head.prior_generator.strides[level], head.level_num_anchors(level))


class Detections(DecodedOutputs):
    """``images`` [1, 3, H, W] -> (boxes [K, 4] xyxy input px, scores [K], labels [K] int64), best first.

    Same steps and settings (``head.test_cfg``) as ``head.predict`` with image size (H, W) and scale factor 1.
    Only the chosen candidates are decoded. Candidate selection pads each level's flattened scores with -1 up to
    ``nms_pre`` entries so that ``topk`` has a constant k whatever the input size (a dynamic ``min(nms_pre, n)``
    would be frozen by the tracer); padded entries never pass the score threshold.
    """

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        head, cfg = self.detector.head, self.detector.head.test_cfg
        cls_scores, bbox_preds = self.detector.raw_outputs(images)
        boxes, scores, labels = [], [], []
        for level, (cls_map, reg_map) in enumerate(zip(cls_scores, bbox_preds)):
            level_scores, level_factors, level_reg = head.flat_outputs([cls_map], [reg_map])  # [1, P_l, ...]
            prior, label, score = self._candidates(level_scores[0], nms_pre=cfg.nms_pre, score_thr=cfg.score_thr)
            if level_factors is not None:
                score = score * level_factors[0][prior]
            cells, strides = self._level_priors(cls_map, level)
            boxes.append(head.decode_level_rows(level_reg[0][prior], cells[prior], strides[prior], prior, level))
            scores.append(score)
            labels.append(label)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        boxes = torch.minimum(boxes.clamp(min=0), _input_extent(images, boxes.dtype))
        if cfg.min_bbox_size >= 0:
            big = ((boxes[:, 2:] - boxes[:, :2]) > cfg.min_bbox_size).all(dim=1)
            boxes, scores, labels = boxes[big], scores[big], labels[big]
        keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_per_img]
        return boxes[keep], scores[keep], labels[keep]

    @staticmethod
    def _candidates(scores: torch.Tensor, *, nms_pre: int,
                    score_thr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """scores [P_l, C] -> prior index, label and score of the best ``nms_pre`` pairs above ``score_thr``."""
        num_classes = scores.shape[1]
        flat = scores.reshape(-1)
        if nms_pre >= 0:
            flat = torch.cat([flat, flat.new_full((nms_pre,), -1.0)])
            top_scores, top_index = flat.topk(nms_pre)
        else:
            top_scores, top_index = flat.sort(descending=True)
        keep = top_scores > score_thr
        top_index = top_index[keep]
        return top_index // num_classes, top_index % num_classes, top_scores[keep]


def _input_extent(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[4] = (W, H, W, H) of ``images`` [N, 3, H, W] as a tensor computed from the (traced) size, not a constant."""
    height, width = images.shape[-2:]
    one = torch.ones((), dtype=dtype, device=images.device)  # int * tensor keeps the size symbolic when tracing
    return torch.stack([one * width, one * height, one * width, one * height])


VIEWS = {"raw": RawOutputs, "decoded": DecodedOutputs, "detections": Detections}


def output_names(view: str, num_levels: int, strides: Sequence[int]) -> list[str]:
    """Graph output names of a view: ``cls_logits_s8``..., ``reg_logits_s8``... / scores, boxes / boxes, scores,
    labels."""
    if view == "raw":
        return [f"cls_logits_s{s}" for s in strides[:num_levels]] + [f"reg_logits_s{s}" for s in strides[:num_levels]]
    return ["scores", "boxes"] if view == "decoded" else ["boxes", "scores", "labels"]
