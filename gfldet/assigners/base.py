"""Shared pieces of the batched assigners: padded GT batches and the assignment result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from gfldet.host_tensor import host_tensor, to_device_async

__all__ = ["AssignResult", "pad_gt_boxes", "rows_per_prior"]


def rows_per_prior(rows: Sequence[Sequence[float]], num_per_level: Sequence[int], *, like: Tensor) -> Tensor:
    """Per-level rows (e.g. ``(low, high)`` size ranges) repeated for each prior of their level: ``[P, len(row)]``
    with ``like``'s dtype and device. Built on the host and copied without waiting for the GPU (a device-side
    ``repeat_interleave`` waits to size its output)."""
    repeats = torch.tensor(list(num_per_level))
    return to_device_async(torch.tensor(rows, dtype=like.dtype).repeat_interleave(repeats, dim=0), like.device)


def pad_gt_boxes(boxes: Sequence[Tensor], labels: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image GTs into padded batch tensors.

    Args:
        boxes: N tensors ``[G_i, 4]`` (xyxy, any units), all on one device.
        labels: N int64 tensors ``[G_i]``.

    Returns:
        ``boxes [N, G_max, 4]`` (padding rows are 0), ``labels [N, G_max]`` (padding is -1) and
        ``valid [N, G_max]`` bool (True for real GTs). ``G_max`` is 0 when no image has a GT.
    """
    if not boxes:
        raise ValueError("pad_gt_boxes: the batch has no images (empty lists of boxes and labels)")
    if len(boxes) != len(labels):
        raise ValueError(f"pad_gt_boxes: need one labels tensor per boxes tensor, got {len(boxes)} and {len(labels)}")
    for i, (b, l) in enumerate(zip(boxes, labels)):
        if b.dim() != 2 or b.shape[1] != 4 or l.shape != b.shape[:1]:
            raise ValueError(
                f"pad_gt_boxes: image {i} has boxes {tuple(b.shape)} and labels {tuple(l.shape)}; "
                f"expected [G, 4] and [G]"
            )
    padded_boxes = torch.nn.utils.rnn.pad_sequence(list(boxes), batch_first=True, padding_value=0.0)
    padded_labels = torch.nn.utils.rnn.pad_sequence(list(labels), batch_first=True, padding_value=-1)
    counts = host_tensor([b.shape[0] for b in boxes], device=padded_boxes.device)
    valid = torch.arange(padded_boxes.shape[1], device=counts.device) < counts[:, None]
    return padded_boxes, padded_labels, valid


@dataclass
class AssignResult:
    """Per-prior assignment of a batch.

    Attributes:
        gt_index: ``[N, P]`` int64 index into the image's (padded) GTs; -1 = negative / background.
        max_iou: ``[N, P]`` float IoU between the prior and its assigned GT; 0 for negatives.
    """

    gt_index: Tensor
    max_iou: Tensor

    @property
    def positive(self) -> Tensor:
        """``[N, P]`` bool, True where a prior is assigned to a GT."""
        return self.gt_index >= 0

    def gather(self, values: Tensor, fill: float | int) -> Tensor:
        """Per-prior values of the assigned GT: ``values [N, G, ...] -> [N, P, ...]``, ``fill`` for negatives.

        E.g. ``gather(gt_labels, fill=num_classes)`` gives classification labels with background = C, and
        ``gather(gt_boxes, fill=0)`` the box targets.
        """
        index = self.gt_index.clamp(min=0)
        trailing = values.shape[2:]
        index = index.reshape(*index.shape, *(1,) * len(trailing)).expand(*index.shape, *trailing)
        if values.shape[1] == 0:
            return values.new_full(index.shape, fill)
        picked = values.gather(1, index)
        positive = self.positive.reshape(*self.positive.shape, *(1,) * len(trailing))
        return picked.masked_fill(~positive, fill)
