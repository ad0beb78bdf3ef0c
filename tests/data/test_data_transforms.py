"""Transforms against the mmcv/mmdetection reference rules (resize size, box scaling, flip, multi-scale, normalise;
SSD's fixed-size resize, Expand, MinIoURandomCrop and PhotoMetricDistortion)."""

import colorsys

import cv2
import numpy as np
import pytest

from gfldet.config import ConfigError
from gfldet.data.transforms import PhotoMetricDistortion, build_transform, fixed_size_resize, rescale_size

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


def test_seeded_steps_draw_independently():
    # albumentations seeds every step of a Compose with the same stream; DetectionTransform must not
    t = build_transform([{"type": "Expand", "ratio_range": [2, 2], "fill": [0, 0, 0], "p": 0.5},
                         {"type": "HorizontalFlip", "p": 0.5}])
    agree = 0
    for seed in range(60):
        out = t(np.zeros((8, 8, 3), np.uint8), np.array([[0, 0, 2, 2]], np.float32), np.array([0]),
                np.zeros((0, 4), np.float32), seed=seed)
        expanded, flipped = out.image.shape[1] == 16, bool(t.steps[1].params)
        agree += expanded == flipped
    assert 15 < agree < 45


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


# ---- SSD512 steps -------------------------------------------------------------------------------------------------

EXPAND = {"type": "Expand", "ratio_range": [1, 4], "fill": [123.675, 116.28, 103.53], "p": 0.5}
MIN_IOU_CROP = {"type": "MinIoURandomCrop", "min_ious": [0.1, 0.3, 0.5, 0.7, 0.9], "min_crop_size": 0.3,
                "bbox_clip_border": True}
FIXED_RESIZE = {"type": "Resize", "scale": [512, 512], "keep_ratio": False}
PHOTO = {"type": "PhotoMetricDistortion", "brightness_delta": 32, "contrast_range": [0.5, 1.5],
         "saturation_range": [0.5, 1.5], "hue_delta": 18}
MEAN_FILL_UINT8 = [123, 116, 103]   # mmdetection's np.full(mean, dtype=uint8) truncates


def _image(hw, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


def torch_equal(a, b):
    return a.shape == b.shape and bool((a == b).all())


@pytest.mark.parametrize("hw, scale", [((300, 400), (512, 512)), ((480, 640), (600, 400)), ((50, 30), (512, 512))])
def test_fixed_size_resize_is_exact_size_cv2_bilinear_and_scales_boxes(hw, scale):
    h, w = hw
    boxes = [[0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h], [0, 0, w, h], [1.5, 2.25, 10.75, 20.5]]
    image, out = _run([{"type": "Resize", "scale": list(scale), "keep_ratio": False}], hw, boxes)
    width, height = scale
    assert tuple(out.image.shape) == (3, height, width)       # scale is [width, height]
    np.testing.assert_array_equal(out.image.permute(1, 2, 0).numpy(),
                                  cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
    sx, sy = width / w, height / h
    assert out.scale_factor == pytest.approx((sx, sy), rel=0, abs=1e-12)
    np.testing.assert_allclose(out.boxes, np.asarray(boxes) * [sx, sy, sx, sy], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(out.labels, [0, 1, 2])


def test_fixed_size_resize_rejects_bad_scale_naming_width_and_height():
    with pytest.raises(ConfigError, match=r"keep_ratio: false must be two positive ints \[width, height\]"):
        build_transform([{"type": "Resize", "scale": [512, 0], "keep_ratio": False}])
    with pytest.raises(ConfigError, match=r"'scale' must be a list of integers, got \[512.5, 512\]"):
        build_transform([{"type": "Resize", "scale": [512.5, 512], "keep_ratio": False}])   # not silently truncated
    with pytest.raises(ConfigError, match=r"two positive ints \[width, height\]; got \(512.5, 512\)"):
        fixed_size_resize((512.5, 512))
    with pytest.raises(ConfigError, match="keep_ratio"):
        build_transform([{"type": "Resize", "scale": [512, 512], "keep_ratio": "no"}])


def test_expand_canvas_fill_and_shifted_boxes():
    h, w = 40, 60
    boxes = np.array([[0, 0, 10, 10], [5, 7, 60, 40], [20, 11, 33, 29]], np.float32)
    lefts, tops = set(), set()
    for seed in range(20):
        t = build_transform([{**EXPAND, "ratio_range": [2.5, 2.5], "p": 1.0}])
        image = _image((h, w), seed)
        out = t(image, boxes, np.array([4, 5, 6]), np.zeros((0, 4), np.float32), seed=seed)
        params = t.steps[0].params
        left, top = params["left"], params["top"]
        canvas = out.image.permute(1, 2, 0).numpy()
        assert canvas.shape == (int(h * 2.5), int(w * 2.5), 3) == (100, 150, 3)
        assert 0 <= left <= 150 - w and 0 <= top <= 100 - h
        np.testing.assert_array_equal(canvas[top:top + h, left:left + w], image)
        border = np.ones(canvas.shape[:2], bool)
        border[top:top + h, left:left + w] = False
        np.testing.assert_array_equal(canvas[border], np.broadcast_to(MEAN_FILL_UINT8, (border.sum(), 3)))
        np.testing.assert_allclose(out.boxes, boxes + [left, top, left, top], rtol=0, atol=1e-4)
        for (x1, y1, x2, y2), box in zip(out.boxes.round().astype(int), boxes.astype(int)):
            np.testing.assert_array_equal(canvas[y1:y2, x1:x2], image[box[1]:box[3], box[0]:box[2]])
        assert out.labels.tolist() == [4, 5, 6]
        lefts.add(left)
        tops.add(top)
    assert len(lefts) > 10 and len(tops) > 10


def test_expand_ratio_in_range_probability_and_seeded():
    t = build_transform([EXPAND])
    sizes = []
    for seed in range(60):
        out = t(_image((20, 30)), np.array([[1, 1, 9, 9]], np.float32), np.array([0]), np.zeros((0, 4), np.float32),
                seed=seed)
        sizes.append(tuple(out.image.shape[1:]))
        again = t(_image((20, 30)), np.array([[1, 1, 9, 9]], np.float32), np.array([0]),
                  np.zeros((0, 4), np.float32), seed=seed)
        assert torch_equal(out.image, again.image) and np.array_equal(out.boxes, again.boxes)
    expanded = [s for s in sizes if s != (20, 30)]
    assert 15 < len(expanded) < 45
    assert all(20 <= hh <= 80 and 30 <= ww <= 120 and abs(ww / 30 - hh / 20) < 0.1 for hh, ww in expanded)


def _patch_iou(patch, boxes):
    """IoU of a patch with each box, written out independently of the module."""
    out = []
    for b in boxes:
        iw = max(0.0, min(b[2], patch[2]) - max(b[0], patch[0]))
        ih = max(0.0, min(b[3], patch[3]) - max(b[1], patch[1]))
        inter = iw * ih
        out.append(inter / ((patch[2] - patch[0]) * (patch[3] - patch[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))
    return np.array(out)


def test_min_iou_crop_keeps_centred_boxes_with_their_labels_and_meets_the_mode():
    h, w = 200, 300
    boxes = np.array([[10, 10, 200, 150], [100, 50, 290, 195], [60, 40, 240, 160], [150, 5, 295, 120]], np.float32)
    labels = np.array([11, 22, 33, 44])
    ignore = np.array([[20, 60, 180, 190]], np.float32)
    everything = np.concatenate([boxes, ignore]).astype(np.float64)
    t = build_transform([MIN_IOU_CROP])
    image = _image((h, w))
    modes, kept = set(), set()
    for seed in range(80):
        out = t(image, boxes, labels, ignore, seed=seed)
        mode, patch = t.steps[0].params["mode"], t.steps[0].params["patch"]
        modes.add(mode)
        kept.add((len(out.boxes), len(out.ignore_boxes)))
        cropped = out.image.permute(1, 2, 0).numpy()
        if mode == 1:
            assert patch == (0, 0, w, h)
            np.testing.assert_array_equal(cropped, image)
            np.testing.assert_allclose(out.boxes, boxes, atol=1e-4)
            np.testing.assert_allclose(out.ignore_boxes, ignore, atol=1e-4)
            assert out.labels.tolist() == labels.tolist()
            continue
        x1, y1, x2, y2 = patch
        assert all(isinstance(v, int) for v in patch) and 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        pw, ph = x2 - x1, y2 - y1
        assert 0.3 * w - 1 <= pw <= w and 0.3 * h - 1 <= ph <= h and 0.5 * pw - 1 <= ph <= 2 * pw + 1
        np.testing.assert_array_equal(cropped, image[y1:y2, x1:x2])
        assert _patch_iou(patch, everything).min() >= mode         # ignore boxes take part, as in mmdetection
        centres = (everything[:, :2] + everything[:, 2:]) / 2
        inside = (centres[:, 0] > x1) & (centres[:, 0] < x2) & (centres[:, 1] > y1) & (centres[:, 1] < y2)
        assert inside.any()
        expected = (everything - [x1, y1, x1, y1]).clip(0, [pw, ph, pw, ph])
        gt_in, ignore_in = inside[:len(boxes)], inside[len(boxes):]
        np.testing.assert_allclose(out.boxes, expected[:len(boxes)][gt_in], rtol=0, atol=1e-3)
        assert out.labels.tolist() == labels[gt_in].tolist()
        np.testing.assert_allclose(out.ignore_boxes, expected[len(boxes):][ignore_in], rtol=0, atol=1e-3)
    assert {1, 0, 0.1, 0.3} <= modes
    assert len(kept) >= 4 and any(g < 4 for g, _ in kept) and any(i == 0 for _, i in kept)


def test_min_iou_crop_an_ignore_box_centre_alone_admits_a_patch():
    # mmdetection tests IoU and centres on gt_bboxes, which hold the ignore (crowd) boxes too
    t = build_transform([{**MIN_IOU_CROP, "min_ious": [0.0]}])
    gt, ignore = np.array([[0, 0, 20, 20]], np.float32), np.array([[60, 60, 100, 100]], np.float32)
    kept = set()
    for seed in range(30):
        out = t(_image((100, 100)), gt, np.array([5]), ignore, seed=seed)
        kept.add((len(out.boxes), len(out.ignore_boxes)))
    assert (0, 1) in kept and (1, 0) in kept


def test_min_iou_crop_patch_draws_follow_mmdetection():
    """mmdetection draws ``left = numpy.random.uniform(w - new_w)``: low = w - new_w, high = 1 (not [0, w - new_w])."""
    import random

    class Fixed(random.Random):
        def __init__(self, u):
            super().__init__(0)
            self.u = u

        def random(self):
            return self.u

    step = build_transform([MIN_IOU_CROP]).steps[0]
    step.py_random = Fixed(0.0)                 # every uniform(a, b) returns a
    assert step._sample_patch(300, 200) == (210, 140, 300, 200)
    step.py_random = Fixed(0.999)               # new_w = 299.79, left = 0.21 + 0.79 * 0.999: (0, 0, int(300.79), ..)
    assert step._sample_patch(300, 200) == (0, 0, 300, 200)
    step.py_random = Fixed(0.5)                 # new_w = 195, new_h = 130, left = (105 + 1) / 2, top = (70 + 1) / 2
    assert step._sample_patch(300, 200) == (53, 35, 248, 165)


def test_min_iou_crop_without_boxes_still_crops():
    t = build_transform([MIN_IOU_CROP])
    shapes = set()
    for seed in range(20):
        out = t(_image((60, 80)), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                seed=seed)
        x1, y1, x2, y2 = t.steps[0].params["patch"]
        assert tuple(out.image.shape[1:]) == (y2 - y1, x2 - x1) and len(out.boxes) == 0
        shapes.add(tuple(out.image.shape[1:]))
    assert len(shapes) > 10


def test_min_iou_crop_tiny_box_allows_only_modes_0_and_1():
    t = build_transform([MIN_IOU_CROP])
    box = np.array([[100, 60, 102, 62]], np.float32)       # IoU with any patch < 0.1
    for seed in range(20):
        out = t(_image((120, 200)), box, np.array([7]), np.zeros((0, 4), np.float32), seed=seed)
        mode, (x1, y1, x2, y2) = t.steps[0].params["mode"], t.steps[0].params["patch"]
        assert mode in (0, 1) and x1 < 101 < x2 and y1 < 61 < y2
        np.testing.assert_allclose(out.boxes, box - [x1, y1, x1, y1], atol=1e-4)
        assert out.labels.tolist() == [7]


def test_min_iou_crop_impossible_crop_returns_the_image_unchanged():
    # a 1 px box in the corner: no IoU mode > 0 holds, and its centre (599.5, 599.5) needs x2 = y2 = 600, i.e.
    # a patch of nearly the full image on both sides (probability ~1e-5 per trial): only mode 1 (no crop) remains
    t = build_transform([MIN_IOU_CROP])
    image, box = _image((600, 600)), np.array([[599, 599, 600, 600]], np.float32)
    for seed in range(5):
        out = t(image, box, np.array([3]), np.zeros((0, 4), np.float32), seed=seed)
        assert t.steps[0].params["mode"] == 1
        np.testing.assert_array_equal(out.image.permute(1, 2, 0).numpy(), image)
        np.testing.assert_allclose(out.boxes, box)


def _neutral(**overrides):
    params = {"contrast_before_hsv": True, "brightness": 0.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0,
              "channel_order": (0, 1, 2)}
    return {**params, **overrides}


def _photo():
    return PhotoMetricDistortion(brightness_delta=32, contrast_range=[0.5, 1.5], saturation_range=[0.5, 1.5],
                                 hue_delta=18)


def _mmdet_photometric_bgr(img_bgr, mode, delta, alpha, saturation, hue, perm):
    """mmdetection 3.3's PhotoMetricDistortion.transform with every flag on, written out on BGR as there."""
    img = img_bgr.astype(np.float32)
    img += delta
    if mode == 1:
        img *= alpha
    img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    img[..., 1] *= saturation
    if saturation > 1:
        img[..., 1] = img[..., 1].clip(0, 1)
    img[..., 0] += hue
    img[..., 0][img[..., 0] > 360] -= 360
    img[..., 0][img[..., 0] < 0] += 360
    img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if mode == 0:
        img *= alpha
    return img[..., perm]


def test_photometric_identity_when_every_step_is_off():
    image = _image((16, 24))
    out = _photo().apply(image, **_neutral())
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, image, atol=1e-3)   # the float32 HSV round trip, not rounded


@pytest.mark.parametrize("delta", [20.3, -20.3])
def test_photometric_brightness_adds_delta(delta):
    image = _image((16, 24))
    expected = image.astype(np.float32) + np.float32(delta)   # not clipped: values below 0 and above 255 stay
    np.testing.assert_allclose(_photo().apply(image, **_neutral(brightness=delta)), expected, atol=1e-3)


@pytest.mark.parametrize("before", [True, False])
def test_photometric_contrast_multiplies(before):
    image = _image((16, 24))
    expected = image.astype(np.float32) * np.float32(1.4179)
    np.testing.assert_allclose(_photo().apply(image, **_neutral(contrast=1.4179, contrast_before_hsv=before)),
                               expected, atol=1e-3)


@pytest.mark.parametrize("factor", [0.6, 1.45])
def test_photometric_saturation_scales_distance_to_max_channel(factor):
    # in HSV, scaling S at fixed H and V moves every channel c to V - (V - c) * factor; S is clipped to 1
    image = _image((16, 24)).astype(np.float64)
    v = image.max(axis=2, keepdims=True)
    spread = v - image.min(axis=2, keepdims=True)
    k = np.minimum(factor, np.where(spread > 0, v / np.maximum(spread, 1e-9), factor))
    expected = v - (v - image) * k
    out = _photo().apply(image.astype(np.uint8), **_neutral(saturation=factor))
    np.testing.assert_allclose(out, expected, atol=2e-3)     # float32 HSV vs float64


@pytest.mark.parametrize("hue", [17.3, -12.6])
def test_photometric_hue_rotates_degrees(hue):
    image = _image((8, 12))
    out = _photo().apply(image, **_neutral(hue=hue))
    expected = np.empty(image.shape, np.float64)
    for y, x in np.ndindex(image.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*(image[y, x] / 255.0))
        expected[y, x] = np.array(colorsys.hsv_to_rgb((h + hue / 360) % 1.0, s, v)) * 255
    np.testing.assert_allclose(out, expected, atol=5e-3)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    np.testing.assert_allclose(_photo().apply(red, **_neutral(hue=12.0)).ravel(), [255, 51, 0], atol=1e-3)
    np.testing.assert_allclose(_photo().apply(red, **_neutral(hue=-12.0)).ravel(), [255, 0, 51],
                               atol=1e-3)   # wraps to 348 degrees


def test_photometric_channel_permutation():
    image = _image((8, 12))
    np.testing.assert_allclose(_photo().apply(image, **_neutral(channel_order=(2, 0, 1))), image[..., [2, 0, 1]],
                               atol=1e-3)


@pytest.mark.parametrize("mode", [0, 1])
def test_photometric_all_steps_match_mmdetection_formula_on_bgr(mode):
    image = _image((32, 40))
    rgb_order = (1, 2, 0)
    bgr_perm = [2 - rgb_order[2 - j] for j in range(3)]      # the same channel move seen in BGR
    ours = _photo().apply(image, **_neutral(contrast_before_hsv=mode == 1, brightness=-17.7, contrast=1.21,
                                            saturation=1.33, hue=-15.2, channel_order=rgb_order))
    ref = _mmdet_photometric_bgr(image[..., ::-1], mode, -17.7, 1.21, 1.33, -15.2, bgr_perm)[..., ::-1]
    np.testing.assert_array_equal(ours, ref.astype(np.float32))


def test_photometric_in_pipeline_is_float_rgb_boxes_untouched_and_seeded():
    boxes = [[3, 4, 20, 30], [10, 1, 40, 9]]
    steps = [{"type": "HorizontalFlip", "p": 0.0}, PHOTO]
    image = _run(steps, (32, 48), boxes)[0]
    outs = [_run(steps, (32, 48), boxes, seed=s)[1] for s in range(6)]
    for out in outs:
        assert str(out.image.dtype) == "torch.float32" and tuple(out.image.shape) == (3, 32, 48)
        np.testing.assert_array_equal(out.boxes, np.asarray(boxes, np.float32))
        assert out.labels.tolist() == [0, 1]
    changed = [not np.array_equal(out.image.permute(1, 2, 0).numpy(), image) for out in outs]
    assert sum(changed) >= 4
    assert torch_equal(_run(steps, (32, 48), boxes, seed=3)[1].image, outs[3].image)
    assert not torch_equal(outs[3].image, outs[4].image)


def test_photometric_each_step_drawn_half_the_time():
    t = _photo()
    applied = np.zeros(6)
    for seed in range(400):
        t.set_random_seed(seed)
        p = t.get_params()
        applied += [p["contrast_before_hsv"], p["brightness"] != 0, p["contrast"] != 1, p["saturation"] != 1,
                    p["hue"] != 0, p["channel_order"] != (0, 1, 2)]
        assert abs(p["brightness"]) <= 32 and 0.5 <= p["contrast"] <= 1.5 and 0.5 <= p["saturation"] <= 1.5
        assert abs(p["hue"]) <= 18 and sorted(p["channel_order"]) == [0, 1, 2]
    # the permutation step draws the identity 1 time in 6
    np.testing.assert_allclose(applied / 400, [0.5, 0.5, 0.5, 0.5, 0.5, 0.5 * 5 / 6], atol=0.08)


def test_ssd512_train_pipeline_end_to_end():
    steps = [EXPAND, MIN_IOU_CROP, FIXED_RESIZE, {"type": "HorizontalFlip", "p": 0.5}, PHOTO]
    t = build_transform(steps)
    image = _image((240, 320))
    boxes = np.array([[10, 20, 100, 200], [150, 50, 310, 230], [40, 30, 80, 60]], np.float32)
    counts = set()
    for seed in range(12):
        out = t(image, boxes, np.array([1, 2, 3]), np.array([[200, 100, 240, 150]], np.float32), seed=seed)
        assert tuple(out.image.shape) == (3, 512, 512) and str(out.image.dtype) == "torch.float32"
        assert len(out.boxes) == len(out.labels) >= 0 and set(out.labels.tolist()) <= {1, 2, 3}
        all_boxes = np.concatenate([out.boxes, out.ignore_boxes])
        assert np.all(all_boxes >= 0) and np.all(all_boxes <= 512)
        assert np.all(all_boxes[:, 2:] > all_boxes[:, :2])
        counts.add(len(out.boxes))
    again = t(image, boxes, np.array([1, 2, 3]), np.array([[200, 100, 240, 150]], np.float32), seed=11)
    assert torch_equal(out.image, again.image) and np.array_equal(out.boxes, again.boxes)


@pytest.mark.parametrize("step, match", [
    ({**EXPAND, "fill": [1, 2]}, r"Expand fill must be three numbers in \[0, 255\]"),
    ({**EXPAND, "ratio_range": [0.5, 2]}, r"Expand ratio_range must be two numbers \[min, max\] with 1 <= min"),
    ({**EXPAND, "p": 1.5}, r"Expand p must be a probability"),
    ({**MIN_IOU_CROP, "min_ious": []}, r"MinIoURandomCrop min_ious must be a non-empty list"),
    ({**MIN_IOU_CROP, "min_crop_size": 0}, r"MinIoURandomCrop min_crop_size must be a fraction"),
    ({**MIN_IOU_CROP, "bbox_clip_border": False}, r"MinIoURandomCrop bbox_clip_border must be true"),
    ({**PHOTO, "contrast_range": [1.5, 0.5]}, r"PhotoMetricDistortion contrast_range must be two factors"),
    ({**PHOTO, "saturation_range": [0.5]}, r"PhotoMetricDistortion saturation_range must be two factors"),
    ({**PHOTO, "hue_delta": 400}, r"PhotoMetricDistortion hue_delta must be in \[0, 180\] degrees"),
    ({**PHOTO, "brightness_delta": -1}, r"PhotoMetricDistortion brightness_delta must be >= 0"),
    ({k: v for k, v in EXPAND.items() if k != "fill"}, r"missing required key\(s\): fill"),
    ({**MIN_IOU_CROP, "min_ious": "0.5"}, r"'min_ious' must be a list of numbers"),
])
def test_ssd_steps_reject_bad_arguments(step, match):
    with pytest.raises(ConfigError, match=match):
        build_transform([step])
