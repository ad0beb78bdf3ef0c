"""Batched FoveaBox assigner against mmdetection's painting rule (larger GTs first, per level, in feature cells)."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.assigners import pad_gt_boxes
from gfldet.assigners.fovea import FoveaAssigner
from gfldet.models.priors import PriorGenerator

RANGES = [(1, 64), (32, 128), (64, 256), (128, 512), (256, 2048)]
STRIDES = [8, 16, 32, 64, 128]


def painted(boxes, sizes, sigma):
    """Per level, paint each GT's fovea (cells whose centre i * stride is within sigma * half-size of the GT
    centre), largest area first so that smaller GTs overwrite; -1 elsewhere."""
    out = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for (h, w), stride, (lo, hi) in zip(sizes, STRIDES, RANGES):
        grid = torch.full((h, w), -1)
        for g in sorted(range(len(boxes)), key=lambda i: -areas[i].item()):
            if not lo <= math.sqrt(areas[g]) <= hi:
                continue
            x1, y1, x2, y2 = (boxes[g] / stride).tolist()
            cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            for y in range(h):
                for x in range(w):
                    if abs(x - cx) <= sigma * hw and abs(y - cy) <= sigma * hh:
                        grid[y, x] = g
        out.append(grid.reshape(-1))
    return torch.cat(out)


def test_matches_painting_rule():
    sizes = [(math.ceil(256 / s), math.ceil(320 / s)) for s in STRIDES]
    priors = PriorGenerator(strides=STRIDES, octave_base_scale=8)(sizes, device="cpu")
    gen = torch.Generator().manual_seed(0)
    images = []
    for count in (6, 2):
        xy = torch.rand(count, 2, generator=gen) * torch.tensor([250.0, 200.0])
        images.append(torch.cat([xy, xy + torch.rand(count, 2, generator=gen) * 150 + 10], dim=1))
    boxes, _, valid = pad_gt_boxes(images, [torch.zeros(len(b), dtype=torch.long) for b in images])
    result = FoveaAssigner(scale_ranges=RANGES, sigma=0.4).assign(priors.centers_px, priors.num_per_level, boxes,
                                                                  valid)
    for i, image_boxes in enumerate(images):
        assert torch.equal(result.gt_index[i], painted(image_boxes, sizes, 0.4))
    assert result.positive.any()


def test_no_gts_and_bad_arguments():
    priors = PriorGenerator(strides=STRIDES, octave_base_scale=8)([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)],
                                                                  device="cpu")
    assigner = FoveaAssigner(scale_ranges=RANGES, sigma=0.4)
    result = assigner.assign(priors.centers_px, priors.num_per_level, torch.zeros(1, 0, 4),
                             torch.zeros(1, 0, dtype=torch.bool))
    assert (result.gt_index == -1).all()
    with pytest.raises(ValueError, match="sigma"):
        FoveaAssigner(scale_ranges=RANGES, sigma=0.0)
    with pytest.raises(ValueError, match="scale ranges"):
        assigner.assign(priors.centers_px, priors.num_per_level[:4], torch.zeros(1, 0, 4),
                        torch.zeros(1, 0, dtype=torch.bool))
