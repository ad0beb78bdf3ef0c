"""Parity with mmdetection 3.3's ATSSAssigner as GFLHead uses it (invalid priors dropped first).

Skipped when mmdetection is not installed (see tests/mmdet_compat.py). GT boxes have float coordinates: with
exact centre-distance ties at the k-th place, mmdetection's choice is whatever ``torch.topk`` returns on its
backend, while ours is the lower prior index (tested in test_atss.py).
"""

import math

import torch

from gfldet.assigners import ATSSAssigner, pad_gt_boxes
from tests.assigners.atss_cases import grid_priors, random_gts, valid_flags
from tests.mmdet_compat import import_mmdet

import_mmdet()
from mmdet.models.task_modules.assigners import ATSSAssigner as MMDetATSSAssigner  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402


def _mmdet_assign(priors, num_per_level, boxes, labels, prior_valid, topk):
    """mmdetection on the valid priors, scattered back to all priors: (gt_index [P], iou of the assigned GT [P])."""
    level_counts = [int(v.sum()) for v in torch.split(prior_valid, num_per_level)]
    result = MMDetATSSAssigner(topk=topk).assign(
        InstanceData(priors=priors[prior_valid]), level_counts, InstanceData(bboxes=boxes, labels=labels)
    )
    gt_index = torch.full((priors.shape[0],), -1, dtype=torch.long)
    gt_index[prior_valid] = result.gt_inds - 1
    iou = torch.zeros(priors.shape[0])
    iou[prior_valid] = torch.where(result.gt_inds > 0, result.max_overlaps, 0.0)
    return gt_index, iou


def test_atss_matches_mmdetection_on_random_batches():
    g = torch.Generator().manual_seed(11)
    pad_hw = (320, 480)
    priors, num_per_level, cells = grid_priors(pad_hw)
    grids = [(math.ceil(pad_hw[0] / s), math.ceil(pad_hw[1] / s), s) for s, _, _ in cells]
    positives = 0
    for topk in (9, 3):
        assigner = ATSSAssigner(topk=topk)
        for _ in range(6):
            sizes = [(int(torch.randint(30, pad_hw[0] + 1, (1,), generator=g)),
                      int(torch.randint(30, pad_hw[1] + 1, (1,), generator=g))) for _ in range(4)]
            gts = [random_gts(g, hw, 12) for hw in sizes]
            prior_valid = torch.stack([valid_flags(cells, hw) for hw in sizes])
            boxes, labels, gt_valid = pad_gt_boxes([b for b, _ in gts], [lab for _, lab in gts])
            exhaustive = assigner.assign(priors, num_per_level, boxes, gt_valid, prior_valid)
            windowed = assigner.assign(priors, num_per_level, boxes, gt_valid, prior_valid, level_grids=grids)
            for i, (image_boxes, image_labels) in enumerate(gts):
                gt_index, iou = _mmdet_assign(priors, num_per_level, image_boxes, image_labels, prior_valid[i], topk)
                for ours in (exhaustive, windowed):
                    assert torch.equal(ours.gt_index[i], gt_index)
                    assert torch.equal(ours.max_iou[i], iou)
                positives += int((gt_index >= 0).sum())
    assert positives > 500
