"""Training targets shared by every dense head: what an assignment of priors to GT boxes gives the losses.

``DenseTargets.build`` turns one batched assignment into the per-prior class labels, the positives' indices, GT
boxes, prior centres and ltrb distances (pixels and *stride units* of the prior's level) and the normaliser of the
classification loss; ``scatter`` puts per-positive soft class targets (e.g. the IoU of QFL) back on the [N, P] grid.

Normalisers (averaged over processes when torch.distributed is initialised, as mmdetection's ``reduce_mean`` in
GFL / ATSS / FCOS; the anchor heads' one stays per process, as mmdetection's ``AnchorHead``: RetinaNet, SSD):
- classification: ``sum_i max(num_pos_i, 1)`` over the images (mmdetection 3.3's ``SamplingResult.avg_factor``), at
  least 1 -- an image without GT counts as one positive;
- box losses: the summed per-positive weight, at least 1 (``weight_normaliser``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from gfldet.assigners import AssignResult
from gfldet.box_coding import bbox2distance
from gfldet.models.priors import Priors

__all__ = ["DenseTargets", "mean_over_processes", "positive_normaliser", "weight_normaliser", "max_class_score"]


def mean_over_processes(value: Tensor) -> Tensor:
    """The mean of ``value`` over all processes when torch.distributed is initialised, else ``value``."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone() / dist.get_world_size()
    dist.all_reduce(value)
    return value


def positive_normaliser(positive: Tensor, *, over_processes: bool = True) -> Tensor:
    """positive [N, P] bool -> float32 scalar ``sum_i max(num_pos_i, 1)``, at least 1; averaged over processes
    unless ``over_processes`` is false."""
    total = positive.sum(dim=1).clamp(min=1).sum().to(torch.float32)
    return (mean_over_processes(total) if over_processes else total).clamp(min=1)


def weight_normaliser(weight: Tensor) -> Tensor:
    """Per-positive box-loss weights [M] -> scalar ``sum(weight)``, averaged over processes, at least 1."""
    return mean_over_processes(weight.sum()).clamp(min=1)


def max_class_score(pos_logits: Tensor) -> Tensor:
    """Positives' cls logits [M, C] -> detached max sigmoid score [M] (GFL's weight of the box losses)."""
    return pos_logits.detach().sigmoid().max(dim=1).values


@dataclass(frozen=True)
class DenseTargets:
    """Targets of a batch of N images over P priors, M of them positive.

    priors: the batch's Priors; prior_valid: [N, P] bool, priors on each image's own area; assignment: the
    AssignResult (gt_index [N, P]); labels: [N, P] int64 class of each prior, ``num_classes`` = background;
    pos_img / pos_prior: [M] int64 image and prior index of each positive (image-major order); gt_boxes_px: [M, 4]
    xyxy px of each positive's GT; strides: [M, 1] px, the stride of each positive's level; centers: [M, 2] (x, y)
    and target_boxes: [M, 4] xyxy, both in stride units; target_ltrb: [M, 4] unclamped distances from the centre to
    the GT sides in stride units; num_pos: float32 scalar, the classification normaliser (``positive_normaliser``).
    """

    priors: Priors
    prior_valid: Tensor
    assignment: AssignResult
    labels: Tensor
    pos_img: Tensor
    pos_prior: Tensor
    gt_boxes_px: Tensor
    strides: Tensor
    centers: Tensor
    target_boxes: Tensor
    target_ltrb: Tensor
    num_pos: Tensor

    @classmethod
    def build(cls, priors: Priors, prior_valid: Tensor, assignment: AssignResult, gt_boxes: Tensor,
              gt_labels: Tensor, num_classes: int, *, num_pos_over_processes: bool = True) -> "DenseTargets":
        """From padded GTs (gt_boxes [N, G, 4] xyxy px, gt_labels [N, G] int64) and their assignment;
        ``num_pos_over_processes``: see ``positive_normaliser``."""
        pos_img, pos_prior = assignment.positive.nonzero(as_tuple=True)
        strides = priors.strides[pos_prior][:, None]
        boxes_px = assignment.gather(gt_boxes, fill=0)[pos_img, pos_prior]
        centers = priors.centers_px[pos_prior] / strides
        target_boxes = boxes_px / strides
        num_pos = positive_normaliser(assignment.positive, over_processes=num_pos_over_processes)
        return cls(priors=priors, prior_valid=prior_valid, assignment=assignment,
                   labels=assignment.gather(gt_labels, fill=num_classes), pos_img=pos_img, pos_prior=pos_prior,
                   gt_boxes_px=boxes_px, strides=strides, centers=centers, target_boxes=target_boxes,
                   target_ltrb=bbox2distance(centers, target_boxes), num_pos=num_pos)

    def positives(self, values: Tensor) -> Tensor:
        """Per-prior values [N, P, ...] -> the positives' rows [M, ...]."""
        return values[self.pos_img, self.pos_prior]

    def scatter(self, values: Tensor) -> Tensor:
        """Per-positive soft class targets [M] -> [N, P] float32, ``values`` on the positives and 0 elsewhere (the
        loss puts them on each positive's labelled class: one-hot x value)."""
        scores = torch.zeros(self.prior_valid.shape, dtype=torch.float32, device=values.device)
        scores[self.pos_img, self.pos_prior] = values.to(scores.dtype)
        return scores
