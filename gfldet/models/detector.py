"""One-stage detector: backbone -> neck -> dense head."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["Detector"]


class Detector(nn.Module):
    """Backbone (C levels) -> neck (pyramid levels) -> head (dense predictions, losses, detections).

    ``forward`` returns the training losses (so that DistributedDataParallel wraps the whole training step);
    ``predict`` returns detections; ``raw_outputs`` returns the head's per-level maps.
    """

    def __init__(self, *, backbone: nn.Module, neck: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head

    def raw_outputs(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """images [N, 3, H, W] normalised, padded -> (cls logits per level [N, C, H_l, W_l],
        regression outputs per level [N, R, H_l, W_l]); for GFL R = 4*(reg_max+1) distribution logits."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        return self.head(self.neck(self.backbone(images)))

    def forward(self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]],
                gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training losses: gt_boxes per image [G_i, 4] xyxy px (resized coords), gt_labels [G_i] int64 0..C-1,
        image_sizes (h, w) before batch padding -> the head's loss scalars by name (GFL: 'loss_cls', 'loss_bbox',
        'loss_dfl'; the ablation heads name theirs, e.g. 'loss_quality')."""
        cls_scores, bbox_preds = self.raw_outputs(images)
        return self.head.loss(cls_scores, bbox_preds, gt_boxes, gt_labels, image_sizes)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]],
                scale_factors: Sequence[tuple[float, float]]) -> list[dict[str, torch.Tensor]]:
        """Detections per image: {'boxes': [K, 4] xyxy px of the original image, 'scores': [K], 'labels': [K],
        'prior_idx': [K] index of the prior each detection came from (prior order of the flattened levels)}.

        image_sizes: (h, w) of each resized image before padding (boxes are clipped to it); scale_factors: (sx, sy)
        of each resize, boxes are divided by them. Call ``model.eval()`` first.
        """
        cls_scores, bbox_preds = self.raw_outputs(images)
        return self.head.predict(cls_scores, bbox_preds, image_sizes, scale_factors)
