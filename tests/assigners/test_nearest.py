import math

import torch

from gfldet.assigners import LevelGrid, nearest_priors
from tests.assigners.atss_cases import grid_priors, random_gts, valid_flags


def _centres(priors):
    return (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2


def test_ties_go_to_the_lower_index_and_invalid_priors_sort_last():
    prior_x = torch.tensor([1.0, 3.0, 2.0, -2.0, 0.5, 2.0, 0.0])  # distances to x=0: 1, 3, 2, 2, 0.5, 2, 0
    prior_y = torch.zeros(7)
    valid = torch.tensor([[True, True, True, True, False, True, True]])
    gt = torch.zeros(1, 1)
    candidates, is_candidate = nearest_priors(prior_x, prior_y, [7], gt, gt, valid, topk=4)
    assert candidates.tolist() == [[[6, 0, 2, 3]]] and is_candidate.all()
    candidates, is_candidate = nearest_priors(prior_x, prior_y, [7], gt, gt, valid, topk=7)
    assert candidates[0, 0, :6].tolist() == [6, 0, 2, 3, 5, 1]
    assert is_candidate.tolist() == [[[True] * 6 + [False]]], "k = min(topk, valid priors) = 6"


def test_windowed_search_equals_exhaustive_including_fallbacks():
    """Grid priors, image areas from tiny (thin valid strips: fallback) to full, GTs on and off the grid."""
    g = torch.Generator().manual_seed(5)
    pad = (192, 320)
    priors, num_per_level, cells = grid_priors(pad, strides=(8, 16, 32))
    prior_x, prior_y = _centres(priors)
    grids = [LevelGrid(math.ceil(pad[0] / s), math.ceil(pad[1] / s), float(s)) for s, _, _ in cells]
    sizes = [(192, 320), (20, 300), (150, 24), (60, 60), (192, 100)]
    prior_valid = torch.stack([valid_flags(cells, hw) for hw in sizes])
    boxes = torch.stack([torch.cat([random_gts(g, hw, 10)[0], torch.zeros(10, 4)])[:10] for hw in sizes])
    boxes[0, 0] = torch.tensor([900.0, 900.0, 950.0, 960.0])  # centre far outside the grid
    boxes[1, 1] = torch.tensor([0.0, 0.0, 4.0, 4.0])  # corner
    gt_x, gt_y = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    for topk in (9, 4):
        exhaustive = nearest_priors(prior_x, prior_y, num_per_level, gt_x, gt_y, prior_valid, topk)
        windowed = nearest_priors(prior_x, prior_y, num_per_level, gt_x, gt_y, prior_valid, topk, grids=grids)
        assert torch.equal(exhaustive[1], windowed[1])
        used = exhaustive[1]
        assert torch.equal(exhaustive[0][used], windowed[0][used])
