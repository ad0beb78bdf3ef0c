"""The Batch structure and the collate function that pads a list of Samples into it.

Padding follows mmdetection: images are normalised first, then padded bottom/right with zeros to a common size
that is a multiple of ``size_divisor`` (32). Each image keeps its own (h, w) so that priors falling in the padding
can be marked invalid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Sequence

import torch

from gfldet.data.coco import Sample

__all__ = ["Batch", "collate"]


@dataclass
class Batch:
    """A padded batch of N images and their targets.

    images: [N, 3, H, W] float32, normalised, zero-padded bottom/right; H and W are multiples of size_divisor.
    image_sizes: per image (h, w) after resize, before padding.  scale_factors: per image (sx, sy) = resized /
    original.  original_sizes: per image (h, w) of the file.  gt_boxes: per image [G, 4] float32 xyxy px in
    resized-image coordinates.  gt_labels: per image [G] int64 in 0..C-1.  ignore_boxes: per image [I, 4] float32
    xyxy px (crowd).  image_ids: COCO image ids.  file_names: paths relative to the split's img_dir.
    skipped_images: why each unreadable image passed over for this batch (``data.on_bad_image: skip``) was skipped.
    """

    images: torch.Tensor
    image_sizes: list[tuple[int, int]]
    scale_factors: list[tuple[float, float]]
    original_sizes: list[tuple[int, int]]
    gt_boxes: list[torch.Tensor]
    gt_labels: list[torch.Tensor]
    ignore_boxes: list[torch.Tensor]
    image_ids: list[int]
    file_names: list[str]
    skipped_images: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]

    def _map_tensors(self, fn) -> "Batch":
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = fn(value)
            elif value and isinstance(value[0], torch.Tensor):
                changes[f.name] = [fn(v) for v in value]
        return replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on ``device``."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """A copy with every tensor in pinned memory (called by DataLoader(pin_memory=True))."""
        return self._map_tensors(lambda t: t.pin_memory())


def collate(samples: Sequence[Sample], *, size_divisor: int, mean: Sequence[float], std: Sequence[float]) -> Batch:
    """Normalise ``(RGB - mean) / std`` and pad ``samples`` ([3, h, w] images, uint8 or float32) into one Batch.

    The padding (bottom/right, to a multiple of ``size_divisor``) is 0 in the normalised images, as mmdetection.
    Normalising here, straight into the padded buffer, saves a full float image copy per sample.
    """
    height = math.ceil(max(s.image.shape[1] for s in samples) / size_divisor) * size_divisor
    width = math.ceil(max(s.image.shape[2] for s in samples) / size_divisor) * size_divisor
    images = torch.zeros((len(samples), 3, height, width), dtype=torch.float32)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    for i, sample in enumerate(samples):
        region = images[i, :, : sample.image.shape[1], : sample.image.shape[2]]
        torch.sub(sample.image, mean_t, out=region).div_(std_t)   # uint8 or float32 - float -> float32, in place
    return Batch(
        images=images,
        image_sizes=[s.image_size for s in samples],
        scale_factors=[s.scale_factor for s in samples],
        original_sizes=[s.original_size for s in samples],
        gt_boxes=[s.boxes for s in samples],
        gt_labels=[s.labels for s in samples],
        ignore_boxes=[s.ignore_boxes for s in samples],
        image_ids=[s.image_id for s in samples],
        file_names=[s.file_name for s in samples],
        skipped_images=[reason for s in samples for reason in s.skipped_images],
    )
