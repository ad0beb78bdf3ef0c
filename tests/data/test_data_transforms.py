"""Transforms against the mmcv/mmdetection reference rules (resize size, box scaling, flip, multi-scale, normalise)."""

import numpy as np
import pytest

from gfldet.config import ConfigError
from gfldet.data.transforms import build_transform, rescale_size

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def reference_rescale(w, h, scale=(1333, 800)):
    """mmcv.rescale_size with a (long, short) tuple, written out independently."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)


@pytest.mark.parametrize("w, h, expected", [
    (640, 480, (1067, 800)),     # short side bound
    (500, 375, (1067, 800)),
    (427, 640, (800, 1199)),     # portrait
    (1000, 100, (1333, 133)),    # long side bound
    (1333, 800, (1333, 800)),    # identity
    (333, 500, (800, 1201)),     # 1.5 * 800.8 rounds half up
])
def test_rescale_size_matches_reference(w, h, expected):
    assert rescale_size(w, h, (1333, 800)) == expected == reference_rescale(w, h)


def _run(steps, image_hw, boxes, seed=0):
    t = build_transform(steps)
    image = np.random.default_rng(0).integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    return image, t(image, np.asarray(boxes, np.float32), np.arange(len(boxes)), np.zeros((0, 4), np.float32),
                    seed=seed)


@pytest.mark.parametrize("hw", [(480, 640), (375, 500), (640, 427), (100, 1000)])
def test_resize_size_and_boxes_scaled_by_actual_factors(hw):
    h, w = hw
    boxes = [[0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h], [0, 0, w, h], [5.5, 7.25, 30.75, 40.5]]
    image, out = _run([{"type": "Resize", "scale": [1333, 800]}], hw, boxes)
    new_w, new_h = reference_rescale(hw[1], hw[0])
    assert tuple(out.image.shape) == (3, new_h, new_w)
    sx, sy = new_w / hw[1], new_h / hw[0]
    assert out.scale_factor == pytest.approx((sx, sy), rel=0, abs=1e-12)
    np.testing.assert_allclose(out.boxes, np.asarray(boxes) * [sx, sy, sx, sy], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(out.labels, [0, 1, 2])


def test_resize_is_cv2_bilinear_and_collate_normalises():
    import cv2
    import torch

    from gfldet.data.batching import collate
    from gfldet.data.coco import Sample

    image, out = _run([{"type": "Resize", "scale": [1333, 800]}], (48, 64), [[1, 1, 9, 9]])
    resized = cv2.resize(image, (1067, 800), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out.image.permute(1, 2, 0).numpy(), resized)
    sample = Sample(image=out.image, boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64),
                    ignore_boxes=torch.zeros(0, 4), image_id=1, file_name="x", image_size=(800, 1067),
                    original_size=(48, 64), scale_factor=out.scale_factor)
    batch = collate([sample], size_divisor=32, mean=MEAN.tolist(), std=STD.tolist())
    np.testing.assert_allclose(batch.images[0, :, :800, :1067].permute(1, 2, 0).numpy(), (resized - MEAN) / STD,
                               atol=1e-4)
    assert torch.all(batch.images[0, :, :, 1067:] == 0)


def test_horizontal_flip_is_exact():
    boxes = [[10, 20, 110, 220], [0, 0, 3, 3], [600, 5, 640, 10]]
    image, out = _run([{"type": "Resize", "scale": [640, 480]}, {"type": "HorizontalFlip", "p": 1.0}],
                      (480, 640), boxes)
    b = np.asarray(boxes, np.float64)
    expected = np.stack([640 - b[:, 2], b[:, 1], 640 - b[:, 0], b[:, 3]], axis=1)
    np.testing.assert_allclose(out.boxes, expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(out.image.numpy(), image[:, ::-1].transpose(2, 0, 1))


def test_flip_probability_half_is_seeded():
    flips = []
    for seed in range(40):
        _, out = _run([{"type": "HorizontalFlip", "p": 0.5}], (32, 64), [[0, 0, 10, 10]], seed=seed)
        flips.append(out.boxes[0, 0] > 0)
    assert 8 < sum(flips) < 32
    again = [(_run([{"type": "HorizontalFlip", "p": 0.5}], (32, 64), [[0, 0, 10, 10]], seed=s)[1].boxes[0, 0] > 0)
             for s in range(40)]
    assert flips == again


def test_random_resize_short_side_in_range_and_keep_ratio():
    shorts, steps = set(), [{"type": "RandomResize", "scales": [[1333, 480], [1333, 800]]}]
    for seed in range(60):
        _, out = _run(steps, (480, 640), [[10, 10, 50, 50]], seed=seed)
        h, w = out.image.shape[1:]
        assert 480 <= h <= 800 and w <= 1333
        assert w == int(640 * (h / 480) + 0.5) or abs(w / h - 640 / 480) < 0.01
        shorts.add(h)
    assert len(shorts) > 30 and min(shorts) < 560 and max(shorts) > 720


def test_random_resize_long_side_bound():
    steps = [{"type": "RandomResize", "scales": [[1333, 480], [1333, 800]]}]
    for seed in range(20):
        _, out = _run(steps, (100, 1000), [[10, 10, 50, 50]], seed=seed)
        assert out.image.shape[2] <= 1333


def test_crowd_boxes_follow_and_stay_apart():
    t = build_transform([{"type": "HorizontalFlip", "p": 1.0}])
    out = t(np.zeros((10, 20, 3), np.uint8), np.array([[0, 0, 5, 5]], np.float32), np.array([2]),
            np.array([[1, 1, 4, 4]], np.float32))
    np.testing.assert_allclose(out.boxes, [[15, 0, 20, 5]], atol=1e-5)
    np.testing.assert_allclose(out.ignore_boxes, [[16, 1, 19, 4]], atol=1e-5)
    assert out.labels.tolist() == [2]


def test_unknown_transform_type_names_nearest():
    with pytest.raises(ConfigError, match="did you mean 'HorizontalFlip'"):
        build_transform([{"type": "HorizontalFlipp", "p": 0.5}])
