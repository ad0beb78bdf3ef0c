"""Priors: mmdetection's centre convention, order, anchors, caching and per-image valid flags."""
from __future__ import annotations

import math

import torch

from gfldet.models.priors import PriorGenerator


def _gen():
    return PriorGenerator(strides=[8, 16], octave_base_scale=8)


def test_centres_at_x_times_stride_x_fastest_and_square_anchors():
    priors = _gen()([(2, 3), (1, 2)], device=torch.device("cpu"))
    assert priors.num_per_level == (6, 2)
    expected = [[0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8], [0, 0], [16, 0]]
    assert priors.centers_px.tolist() == expected
    assert priors.strides.tolist() == [8] * 6 + [16] * 2
    assert priors.anchors_px[4].tolist() == [8 - 32, 8 - 32, 8 + 32, 8 + 32]  # side 8 * stride
    assert priors.anchors_px[7].tolist() == [16 - 64, -64, 16 + 64, 64]


def test_priors_are_cached_per_sizes():
    gen = _gen()
    a = gen([(2, 3), (1, 2)], device=torch.device("cpu"))
    assert gen([(2, 3), (1, 2)], device=torch.device("cpu")) is a
    assert gen([(4, 3), (2, 2)], device=torch.device("cpu")) is not a


def test_valid_flags_use_each_image_size_rounded_up_to_the_pad_divisor():
    gen = PriorGenerator(strides=[8, 64], octave_base_scale=8)
    priors = gen([(20, 16), (3, 2)], device=torch.device("cpu"))  # batch padded to 160 x 128
    sizes = [(150, 128), (100, 70)]
    flags = gen.valid_flags(priors, sizes, pad_size_divisor=32)
    for i, (h, w) in enumerate(sizes):
        pad_h, pad_w = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        for p, ((x, y), s) in enumerate(zip(priors.grid_xy.tolist(), priors.strides.tolist())):
            assert flags[i, p] == (x < math.ceil(pad_w / s) and y < math.ceil(pad_h / s)), (i, p)
    # image 1 (100 x 70 -> pad 128 x 96): 12 x 16 cells of stride 8 and 2 x 2 of stride 64
    assert flags[1].sum().item() == 12 * 16 + 2 * 2
    assert flags[0].all()


def test_cache_is_bounded_least_recently_used_first():
    gen = _gen()
    cpu = torch.device("cpu")
    first = gen([(1, 1), (1, 1)], device=cpu)
    for h in range(2, gen.cache_size + 1):
        gen([(h, 1), (1, 1)], device=cpu)
    assert gen([(1, 1), (1, 1)], device=cpu) is first  # refreshed: now the most recent
    gen([(99, 1), (1, 1)], device=cpu)  # evicts (2, 1), the least recently used
    assert len(gen._cache) == gen.cache_size and gen([(1, 1), (1, 1)], device=cpu) is first
