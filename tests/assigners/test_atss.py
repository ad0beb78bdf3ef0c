import math

import pytest
import torch
from torchvision.ops import box_iou

from gfldet.assigners import ATSSAssigner, AssignResult, assign_per_image, pad_gt_boxes
from tests.assigners.atss_cases import grid_priors, oracle_atss, random_gts, valid_flags


def _row_priors(centres_x, half=4.0):
    """Boxes of side 2*half centred at (x, 0)."""
    x = torch.tensor(centres_x, dtype=torch.float32)
    return torch.stack([x - half, torch.full_like(x, -half), x + half, torch.full_like(x, half)], dim=1)


def _assign_one(priors, num_per_level, boxes, prior_valid=None, topk=9):
    valid = None if prior_valid is None else prior_valid[None]
    result = ATSSAssigner(topk=topk).assign(
        priors, num_per_level, boxes[None], torch.ones(1, boxes.shape[0], dtype=torch.bool), valid
    )
    return result.gt_index[0], result.max_iou[0]


def test_tie_at_the_kth_place_goes_to_the_lower_index():
    # Level 0: priors at x = 0, 8, 16, 24; the GT centre (12) is 4 px from x=8 and x=16. topk=1 keeps one of
    # them; two far priors (levels 1, 2, IoU 0) lower the threshold so that the kept one is positive.
    gt = torch.tensor([[6.0, -4.0, 18.0, 4.0]])
    far = [[100.0], [200.0]]
    priors = torch.cat([_row_priors([0, 8, 16, 24])] + [_row_priors(x) for x in far])
    gt_index, max_iou = _assign_one(priors, [4, 1, 1], gt, topk=1)
    assert gt_index.tolist() == [-1, 0, -1, -1, -1, -1]
    assert max_iou[1].item() == pytest.approx(48 / 112)
    swapped = torch.cat([_row_priors([0, 16, 8, 24])] + [_row_priors(x) for x in far])
    assert _assign_one(swapped, [4, 1, 1], gt, topk=1)[0].tolist() == [-1, 0, -1, -1, -1, -1]


def test_gt_without_any_prior_centre_inside_gets_no_positive():
    priors, num_per_level, _ = grid_priors((64, 64), strides=(8, 16))
    far_away = torch.tensor([[500.0, 500.0, 540.0, 540.0]])
    between_centres = torch.tensor([[9.0, 9.0, 15.0, 15.0]])  # tiny box, no centre (multiples of 8) inside
    for boxes in (far_away, between_centres, torch.cat([far_away, between_centres])):
        gt_index, max_iou = _assign_one(priors, num_per_level, boxes)
        assert (gt_index == -1).all() and (max_iou == 0).all()


def test_prior_claimed_by_two_gts_goes_to_the_higher_iou_then_the_lower_index():
    priors, num_per_level, _ = grid_priors((64, 64), strides=(8,), octave_base_scale=2.0)
    prior = 3 * 8 + 3  # centre (24, 24), box [16, 16, 32, 32]
    exact = priors[prior]
    larger = torch.tensor([12.0, 12.0, 44.0, 36.0])  # centre (28, 24): priors (24, 24) and (32, 24) tie
    gt_index, max_iou = _assign_one(priors, num_per_level, torch.stack([larger, exact]))
    assert gt_index[prior].item() == 1 and max_iou[prior].item() == 1.0
    assert (gt_index == 0).any(), "the larger GT keeps positives of its own"
    # both GTs did claim the prior: alone, the larger GT takes it
    assert _assign_one(priors, num_per_level, larger[None])[0][prior].item() == 0
    duplicate, _ = _assign_one(priors, num_per_level, torch.stack([larger, larger]))
    assert (duplicate == 0).sum() > 0 and not (duplicate == 1).any()


def test_image_without_gt_and_padded_gts():
    priors, num_per_level, cells = grid_priors((96, 128))
    g = torch.Generator().manual_seed(3)
    boxes = [random_gts(g, (96, 128), 6)[0] for _ in range(3)]
    boxes[1] = torch.zeros(0, 4)
    boxes[2] = torch.cat([boxes[2], torch.tensor([[10.0, 10.0, 60.0, 50.0]])])
    padded, _, gt_valid = pad_gt_boxes(boxes, [torch.zeros(len(b), dtype=torch.long) for b in boxes])
    result = ATSSAssigner().assign(priors, num_per_level, padded, gt_valid)
    assert (result.gt_index[1] == -1).all() and (result.max_iou[1] == 0).all()
    grids = [(math.ceil(96 / s), math.ceil(128 / s), s) for s, _, _ in cells]
    windowed = ATSSAssigner().assign(priors, num_per_level, padded, gt_valid, level_grids=grids)
    assert torch.equal(windowed.gt_index, result.gt_index) and torch.equal(windowed.max_iou, result.max_iou)
    for i in (0, 2):
        alone = _assign_one(priors, num_per_level, boxes[i])
        assert torch.equal(result.gt_index[i], alone[0]) and torch.equal(result.max_iou[i], alone[1])
    empty, _, empty_valid = pad_gt_boxes([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    assert (ATSSAssigner().assign(priors, num_per_level, empty, empty_valid).gt_index == -1).all()
    assert (ATSSAssigner().assign(priors, num_per_level, empty, empty_valid, level_grids=grids).gt_index == -1).all()


def test_invalid_priors_are_dropped_and_k_shrinks_like_mmdetection():
    """Same result as running ATSS on the valid priors only (what mmdetection does)."""
    priors, num_per_level, cells = grid_priors((256, 256), strides=(8, 32, 64, 128))
    prior_valid = valid_flags(cells, (60, 200))  # levels 64 and 128 keep 1 x 4 and 1 x 2 valid priors (< topk)
    valid_per_level = [int(v.sum()) for v in torch.split(prior_valid, num_per_level)]
    assert valid_per_level[-2:] == [4, 2]
    boxes = torch.tensor([[20.0, 4.0, 90.0, 58.0], [100.0, 0.0, 199.0, 60.0], [120.0, 16.0, 136.0, 32.0]])
    # a GT centred on an invalid prior: that prior would be its best positive
    boxes = torch.cat([boxes, torch.tensor([[224.0, 56.0, 256.0, 88.0]])])
    gt_index, max_iou = _assign_one(priors, num_per_level, boxes, prior_valid)
    compact_index, compact_iou = _assign_one(priors[prior_valid], valid_per_level, boxes)
    assert (gt_index[~prior_valid] == -1).all()
    assert torch.equal(gt_index[prior_valid], compact_index) and torch.equal(max_iou[prior_valid], compact_iou)
    assert (compact_index >= 0).sum() > 0
    assert (_assign_one(priors, num_per_level, boxes)[0] == 3).any(), "with all priors valid the last GT is matched"


@pytest.mark.parametrize("snap", [0.0, 8.0])
def test_batched_equals_per_image_and_the_loop_oracle(snap):
    """Random batches with 0..8 GTs per image and different image sizes; ``snap`` gives exact distance ties."""
    g = torch.Generator().manual_seed(int(snap) + 7)
    priors, num_per_level, cells = grid_priors((160, 224))
    grids = [(math.ceil(160 / s), math.ceil(224 / s), s) for s, _, _ in cells]
    assigner = ATSSAssigner(topk=9)
    for _ in range(4):
        sizes = [tuple(int(torch.randint(40, m + 1, (1,), generator=g)) for m in (160, 224)) for _ in range(5)]
        gts = [random_gts(g, hw, 8, snap=snap)[0] for hw in sizes]
        prior_valid = torch.stack([valid_flags(cells, hw) for hw in sizes])
        padded, _, gt_valid = pad_gt_boxes(gts, [torch.zeros(len(b), dtype=torch.long) for b in gts])
        batched = assigner.assign(priors, num_per_level, padded, gt_valid, prior_valid)
        per_image = assign_per_image(assigner, priors, num_per_level, gts, prior_valid)
        windowed = assigner.assign(priors, num_per_level, padded, gt_valid, prior_valid, level_grids=grids)
        for other in (per_image, windowed):
            assert torch.equal(batched.gt_index, other.gt_index)
            assert torch.equal(batched.max_iou, other.max_iou)
        for i, boxes in enumerate(gts):
            assert torch.equal(batched.gt_index[i], oracle_atss(priors, num_per_level, boxes, prior_valid[i]))
        positive = batched.positive
        iou = torch.zeros_like(batched.max_iou)
        for i, boxes in enumerate(gts):  # max_iou is the IoU with the assigned GT
            if len(boxes):
                full = torch.cat([torch.zeros(1, 4), boxes])  # row 0 stands for "none"
                iou[i] = box_iou(priors, full).gather(1, (batched.gt_index[i] + 1)[:, None])[:, 0]
        assert torch.equal(torch.where(positive, iou, 0.0), batched.max_iou)


def test_gather_labels_and_boxes():
    result = AssignResult(
        gt_index=torch.tensor([[1, -1, 0], [-1, -1, -1]]), max_iou=torch.tensor([[0.5, 0, 0.7], [0, 0, 0]])
    )
    labels = torch.tensor([[4, 2], [-1, -1]])
    boxes = torch.arange(16, dtype=torch.float32).reshape(2, 2, 4)
    assert result.gather(labels, fill=80).tolist() == [[2, 80, 4], [80, 80, 80]]
    assert result.gather(boxes, fill=0.0)[0].tolist() == [[4, 5, 6, 7], [0, 0, 0, 0], [0, 1, 2, 3]]
    assert result.positive.tolist() == [[True, False, True], [False, False, False]]
    no_gt = AssignResult(gt_index=torch.full((2, 3), -1), max_iou=torch.zeros(2, 3))
    assert no_gt.gather(torch.zeros(2, 0, dtype=torch.long), fill=80).tolist() == [[80] * 3] * 2


def test_pad_gt_boxes_and_input_errors():
    boxes, labels, valid = pad_gt_boxes(
        [torch.ones(2, 4), torch.zeros(0, 4)], [torch.tensor([3, 1]), torch.zeros(0, dtype=torch.long)]
    )
    assert boxes.shape == (2, 2, 4) and labels.tolist() == [[3, 1], [-1, -1]]
    assert valid.tolist() == [[True, True], [False, False]]
    with pytest.raises(ValueError, match="image 1 has boxes"):
        pad_gt_boxes([torch.ones(2, 4), torch.ones(3, 5)], [torch.zeros(2), torch.zeros(3)])
    priors, num_per_level, _ = grid_priors((64, 64), strides=(8, 16))
    assigner = ATSSAssigner()
    with pytest.raises(ValueError, match="sum\\(num_priors_per_level\\)"):
        assigner.assign(priors, [64], boxes, valid)
    with pytest.raises(ValueError, match="prior_valid must be"):
        assigner.assign(priors, num_per_level, boxes, valid, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="pad_gt_boxes"):
        assigner.assign(priors, num_per_level, boxes[0], valid)
    with pytest.raises(ValueError, match="level_grids"):
        assigner.assign(priors, num_per_level, boxes, valid, level_grids=[(8, 8, 8), (3, 4, 16)])
    with pytest.raises(ValueError, match="topk"):
        ATSSAssigner(topk=0)
