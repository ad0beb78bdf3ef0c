"""Batched FCOS assigner: hand-made cases and agreement with a straightforward per-point loop."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.assigners import pad_gt_boxes
from gfldet.assigners.fcos import FCOSAssigner
from gfldet.models.priors import PriorGenerator

RANGES = [(-1, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)]


def make_priors(h=256, w=320):
    gen = PriorGenerator(strides=[8, 16, 32, 64, 128], octave_base_scale=8)
    return gen([(math.ceil(h / s), math.ceil(w / s)) for s in gen.strides], device="cpu")


def reference(points, strides, levels, boxes, radius, sampling):
    """Per point, per GT: FCOS's rule written as plain loops."""
    out = []
    for p in range(points.shape[0]):
        x, y, s = points[p, 0].item(), points[p, 1].item(), strides[p].item()
        lo, hi = RANGES[levels[p]]
        best, best_area = -1, math.inf
        for g, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            if sampling:
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                rx1, ry1 = max(cx - s * radius, x1), max(cy - s * radius, y1)
                rx2, ry2 = min(cx + s * radius, x2), min(cy + s * radius, y2)
            else:
                rx1, ry1, rx2, ry2 = x1, y1, x2, y2
            inside = min(x - rx1, y - ry1, rx2 - x, ry2 - y) > 0
            largest = max(x - x1, y - y1, x2 - x, y2 - y)
            area = (x2 - x1) * (y2 - y1)
            if inside and lo <= largest <= hi and area < best_area:
                best, best_area = g, area
        out.append(best)
    return torch.tensor(out)


@pytest.mark.parametrize("sampling", [True, False])
def test_matches_reference_loop(sampling):
    priors = make_priors(128, 160)
    levels = torch.repeat_interleave(torch.arange(5), torch.tensor(priors.num_per_level)).tolist()
    gen = torch.Generator().manual_seed(0)
    images = []
    for count in (5, 2):
        xy = torch.rand(count, 2, generator=gen) * torch.tensor([120.0, 100.0])
        wh = torch.rand(count, 2, generator=gen) * 120 + 4
        images.append(torch.cat([xy, xy + wh], dim=1))
    boxes, labels, valid = pad_gt_boxes(images, [torch.zeros(len(b), dtype=torch.long) for b in images])
    assigner = FCOSAssigner(regress_ranges=RANGES, center_sampling=sampling, center_sample_radius=1.5)
    result = assigner.assign(priors.centers_px, priors.strides, priors.num_per_level, boxes, valid)
    for i, image_boxes in enumerate(images):
        expected = reference(priors.centers_px, priors.strides, levels, image_boxes, 1.5, sampling)
        assert torch.equal(result.gt_index[i], expected)
    assert result.positive.any()


def test_centre_region_range_and_smallest_area():
    points = torch.tensor([[50.0, 50.0], [20.0, 50.0], [48.0, 48.0]])
    strides = torch.tensor([8.0, 8.0, 16.0])
    boxes = torch.tensor([[[0.0, 0.0, 100.0, 100.0], [40.0, 40.0, 60.0, 60.0]]])
    assigner = FCOSAssigner(regress_ranges=[(-1, 64), (64, 128)], center_sampling=True, center_sample_radius=1.5)
    result = assigner.assign(points, strides, [2, 1], boxes, torch.tensor([[True, True]]))
    # point 0: in both centre regions and ranges (max dist 50 / 10) -> the smaller box; point 1: outside the
    # big box's centre region (50 +- 12) -> background; point 2 (level 2, range 64-128): max dist 52 for the
    # big box, 12 for the small one -> neither in range
    assert result.gt_index.tolist() == [[1, -1, -1]]
    masked = assigner.assign(points, strides, [2, 1], boxes, torch.tensor([[True, False]]),
                             prior_valid=torch.tensor([[True, True, True]]))
    assert masked.gt_index.tolist() == [[0, -1, -1]]


def test_no_gts_and_bad_ranges():
    priors = make_priors(64, 64)
    boxes, labels, valid = pad_gt_boxes([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    assigner = FCOSAssigner(regress_ranges=RANGES, center_sampling=True, center_sample_radius=1.5)
    result = assigner.assign(priors.centers_px, priors.strides, priors.num_per_level, boxes, valid)
    assert (result.gt_index == -1).all()
    with pytest.raises(ValueError, match="low < high"):
        FCOSAssigner(regress_ranges=[(64, 0)], center_sampling=True, center_sample_radius=1.5)
    with pytest.raises(ValueError, match="regress ranges for"):
        FCOSAssigner(regress_ranges=RANGES[:2], center_sampling=True, center_sample_radius=1.5).assign(
            priors.centers_px, priors.strides, priors.num_per_level, boxes, valid)


def test_rows_per_prior_repeats_each_level_row_for_its_priors():
    from gfldet.assigners.base import rows_per_prior

    like = torch.zeros(1, dtype=torch.float64)
    rows = rows_per_prior([(-1.0, 64.0), (64.0, 128.0), (128.0, 1e8)], [3, 0, 2], like=like)
    assert rows.dtype == torch.float64 and rows.tolist() == [[-1.0, 64.0]] * 3 + [[128.0, 1e8]] * 2
