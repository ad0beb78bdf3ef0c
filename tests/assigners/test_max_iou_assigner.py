"""Batched max-IoU assigner: thresholds, ignore band, low-quality matches, padding and invalid priors."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from gfldet.assigners import pad_gt_boxes
from gfldet.assigners.max_iou import IGNORED, MaxIoUAssigner

ASSIGNER = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)


def reference(priors, gts):
    """mmdetection's MaxIoUAssigner rule, written per prior and per GT."""
    iou = box_iou(priors, gts)  # [P, G]
    best, arg = iou.max(dim=1)
    out = torch.where(best >= 0.5, arg, torch.where(best < 0.4, -1, IGNORED))
    for g in range(gts.shape[0]):
        top = iou[:, g].max()
        if top > 0:
            out[iou[:, g] == top] = g
    return out


def test_thresholds_ignore_band_and_low_quality_match():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0],  # IoU 1 with GT 0 -> positive
                           [0.0, 0.0, 10.0, 5.5],  # IoU 0.55 -> positive
                           [0.0, 0.0, 10.0, 4.5],  # IoU 0.45 -> ignored
                           [0.0, 0.0, 10.0, 2.0],  # IoU 0.2 -> negative
                           [40.0, 40.0, 60.0, 60.0],  # best for GT 1 (IoU 0.25) -> low-quality positive
                           [100.0, 100.0, 110.0, 110.0]])  # nothing -> negative
    gts = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [45.0, 45.0, 55.0, 55.0]]])
    result = ASSIGNER.assign(priors, gts, torch.tensor([[True, True]]))
    assert result.gt_index.tolist() == [[0, 0, IGNORED, -1, 1, -1]]
    assert result.positive.tolist() == [[True, True, False, False, True, False]]
    torch.testing.assert_close(result.max_iou[0, :2], torch.tensor([1.0, 0.55]))


def test_matches_reference_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=gen) * 200
    priors = torch.cat([xy, xy + torch.rand(300, 2, generator=gen) * 60 + 5], dim=1)
    images = []
    for count in (6, 3):
        gxy = torch.rand(count, 2, generator=gen) * 200
        images.append(torch.cat([gxy, gxy + torch.rand(count, 2, generator=gen) * 60 + 5], dim=1))
    boxes, _, valid = pad_gt_boxes(images, [torch.zeros(len(b), dtype=torch.long) for b in images])
    result = ASSIGNER.assign(priors, boxes, valid)
    for i, image_boxes in enumerate(images):
        assert torch.equal(result.gt_index[i], reference(priors, image_boxes))


def test_invalid_priors_and_no_gts():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]])
    gts = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    result = ASSIGNER.assign(priors, gts, torch.tensor([[True]]), prior_valid=torch.tensor([[False, True]]))
    assert result.gt_index.tolist() == [[-1, 0]]
    empty = ASSIGNER.assign(priors, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))
    assert empty.gt_index.tolist() == [[-1, -1]]
    with pytest.raises(ValueError, match="neg_iou_thr <= pos_iou_thr"):
        MaxIoUAssigner(pos_iou_thr=0.3, neg_iou_thr=0.4, min_pos_iou=0.0)
