"""Shared fixtures for the ATSS tests: grid priors like GFL's, random GT batches and a loop-based oracle."""

from __future__ import annotations

import math

import torch
from torchvision.ops import box_iou

STRIDES = (8, 16, 32, 64, 128)


def grid_priors(pad_hw: tuple[int, int], strides=STRIDES, octave_base_scale: float = 8.0):
    """Square anchors of side ``octave_base_scale * s`` centred at ``(x * s, y * s)`` -> (priors [P, 4],
    num_per_level, cells: per level (stride, x index [P_l], y index [P_l]))."""
    priors, num_per_level, cells = [], [], []
    for s in strides:
        h, w = math.ceil(pad_hw[0] / s), math.ceil(pad_hw[1] / s)
        iy, ix = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        ix, iy = ix.flatten(), iy.flatten()
        cx, cy, half = ix * float(s), iy * float(s), octave_base_scale * s / 2
        priors.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1))
        num_per_level.append(h * w)
        cells.append((s, ix, iy))
    return torch.cat(priors), num_per_level, cells


def valid_flags(cells, image_hw: tuple[int, int]) -> torch.Tensor:
    """mmdetection's flags: cell (x, y) of stride s is valid iff x < ceil(w / s) and y < ceil(h / s)."""
    h, w = image_hw
    return torch.cat([(ix < math.ceil(w / s)) & (iy < math.ceil(h / s)) for s, ix, iy in cells])


def random_gts(generator: torch.Generator, image_hw, max_gts: int, snap: float = 0.0):
    """Random xyxy boxes inside the image (2 px to full size); ``snap`` > 0 rounds coordinates to multiples of it
    (grid-aligned boxes produce exact centre-distance ties)."""
    h, w = image_hw
    n = int(torch.randint(0, max_gts + 1, (1,), generator=generator))
    centre = torch.rand(n, 2, generator=generator) * torch.tensor([w, h])
    size = torch.rand(n, 2, generator=generator) ** 2 * torch.tensor([w, h]) + 2
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    if snap:
        boxes = (boxes / snap).round() * snap
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes, torch.randint(0, 3, (n,), generator=generator)


def oracle_atss(priors, num_per_level, gt_boxes, prior_valid, topk: int = 9, inside_eps: float = 0.01):
    """Loop-based ATSS for one image (the rule spelt out; ties in distance -> lower prior index).

    ``gt_boxes [G, 4]``, ``prior_valid [P]`` -> gt_index [P] (-1 = background)."""
    num_priors = priors.shape[0]
    gt_index = torch.full((num_priors,), -1, dtype=torch.long)
    if gt_boxes.shape[0] == 0:
        return gt_index
    iou = box_iou(priors, gt_boxes)  # [P, G]
    pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    best_iou = torch.full((num_priors,), -1.0)
    for g, box in enumerate(gt_boxes):
        gcx, gcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        candidates, start = [], 0
        for size in num_per_level:
            level = torch.arange(start, start + size)[prior_valid[start : start + size]]
            dx, dy = pcx[level] - gcx, pcy[level] - gcy
            order = torch.sort((dx * dx + dy * dy).sqrt(), stable=True).indices
            candidates += level[order[:topk]].tolist()
            start += size
        values = iou[candidates, g]
        threshold = values.mean() + values.std()
        for prior, value in zip(candidates, values.tolist()):
            ltrb = torch.stack([pcx[prior] - box[0], pcy[prior] - box[1], box[2] - pcx[prior], box[3] - pcy[prior]])
            if value >= threshold and ltrb.min() > inside_eps and value > best_iou[prior]:
                best_iou[prior], gt_index[prior] = value, g
    return gt_index
