"""gfldet's SSD512 training transforms agree with mmdetection 3.3's on the same inputs and the same random draws.

Each of our steps is run with a seed while its python RNG is recorded; mmdetection's transform then replays those
draws (its module-level ``numpy.random`` replaced by a stub that returns them in order, or its ``_random_flags``
forced), on the BGR copy of the image as in mmdetection's pipeline. Images, boxes, labels and ignore flags must agree.
Skipped when mmdetection is not installed (scripts/install_parity_deps.sh installs it).
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from gfldet.data.transforms import build_transform
from tests.mmdet_compat import import_mmdet

mmdet = import_mmdet()
from mmdet.datasets.transforms import Expand, MinIoURandomCrop, PhotoMetricDistortion, Resize  # noqa: E402
from mmdet.structures.bbox import HorizontalBoxes  # noqa: E402

MEAN = [123.675, 116.28, 103.53]   # RGB, as data_preprocessor['mean'] of ssd512_coco.py


class _Recorder:
    """Wraps a ``random.Random``: records what ``random``, ``uniform`` and ``choice`` return, in call order."""

    def __init__(self, rng):
        self.rng, self.values = rng, []

    def __getattr__(self, name):
        method = getattr(self.rng, name)

        def recorded(*args):
            value = method(*args)
            self.values.append(value)
            return value
        return recorded


class _Replay:
    """Stands in for ``numpy.random`` in mmdetection's transforms module: returns the recorded values in order."""

    def __init__(self, values):
        self.values = list(values)

    def _next(self, *args, **kwargs):
        return self.values.pop(0)

    uniform = choice = _next


def _run_ours(steps, image, boxes, labels, ignore, seed):
    """Our ``steps`` (the first one recorded) on RGB ``image``; returns the result and the recorded draws."""
    t = build_transform(steps)
    t.seed_steps(seed)
    recorder = _Recorder(t.steps[0].py_random)
    t.steps[0].py_random = recorder
    out = t(image, boxes, labels, ignore)
    return out, t.steps[0], recorder.values


def _run_theirs(transform, image_rgb, boxes, labels, ignore, monkeypatch=None, replay=None):
    if replay is not None:
        monkeypatch.setattr(importlib.import_module("mmdet.datasets.transforms.transforms"), "random", replay)
    all_boxes = np.concatenate([boxes, ignore]).astype(np.float32).reshape(-1, 4)
    results = {"img": np.ascontiguousarray(image_rgb[..., ::-1]), "img_shape": image_rgb.shape[:2],
               "gt_bboxes": HorizontalBoxes(torch.from_numpy(all_boxes)),
               "gt_bboxes_labels": np.r_[labels, np.full(len(ignore), -1)].astype(np.int64),
               "gt_ignore_flags": np.r_[np.zeros(len(boxes), bool), np.ones(len(ignore), bool)]}
    return transform.transform(results)


def _assert_same(out, theirs, *, atol=1e-3):
    np.testing.assert_array_equal(out.image.permute(1, 2, 0).numpy(), theirs["img"][..., ::-1])
    flags = np.asarray(theirs["gt_ignore_flags"], bool)
    their_boxes = theirs["gt_bboxes"].numpy()
    np.testing.assert_allclose(out.boxes, their_boxes[~flags], rtol=0, atol=atol)
    np.testing.assert_allclose(out.ignore_boxes, their_boxes[flags], rtol=0, atol=atol)
    assert out.labels.tolist() == theirs["gt_bboxes_labels"][~flags].tolist()


def _image(hw, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


BOXES = np.array([[10, 10, 200, 150], [100, 50, 290, 195], [60, 40, 240, 160], [150, 5, 295, 120.5]], np.float32)
LABELS = np.array([11, 22, 33, 44])
IGNORE = np.array([[20, 60, 180, 190]], np.float32)


@pytest.mark.parametrize("scale", [(512, 512), (600, 400)])
def test_fixed_size_resize_matches_mmdet(scale):
    image = _image((200, 300))
    out = build_transform([{"type": "Resize", "scale": list(scale), "keep_ratio": False}])(image, BOXES, LABELS, IGNORE)
    theirs = _run_theirs(Resize(scale=scale, keep_ratio=False), image, BOXES, LABELS, IGNORE)
    _assert_same(out, theirs)
    assert out.scale_factor == pytest.approx(theirs["scale_factor"], abs=1e-12)


@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("seed", range(6))
def test_expand_matches_mmdet(seed, p, monkeypatch):
    image = _image((200, 300), seed)
    step = {"type": "Expand", "ratio_range": [1, 4], "fill": MEAN, "p": p}
    out, ours, draws = _run_ours([step], image, BOXES, LABELS, IGNORE, seed)
    replay = _Replay([0.0] * (p == 1.0) + draws)    # albumentations draws no coin for p = 1; mmdetection does
    theirs = _run_theirs(Expand(mean=MEAN, to_rgb=True, ratio_range=(1, 4), prob=p), image, BOXES, LABELS, IGNORE,
                         monkeypatch, replay)
    _assert_same(out, theirs)
    assert replay.values == [] and bool(ours.params) == (len(draws) >= 3)   # applied: (coin,) ratio, left, top


# the second set: one large box, so that the IoU modes 0.5 to 0.9 can be met too
@pytest.mark.parametrize("boxes, labels, ignore", [(BOXES, LABELS, IGNORE),
                                                   (np.array([[30, 20, 280, 190]], np.float32), np.array([9]),
                                                    np.zeros((0, 4), np.float32))])
@pytest.mark.parametrize("seed", range(16))
def test_min_iou_random_crop_matches_mmdet(seed, boxes, labels, ignore, monkeypatch):
    image = _image((200, 300), seed)
    step = {"type": "MinIoURandomCrop", "min_ious": [0.1, 0.3, 0.5, 0.7, 0.9], "min_crop_size": 0.3}
    out, ours, draws = _run_ours([step], image, boxes, labels, ignore, seed)
    replay = _Replay(draws)
    crop = MinIoURandomCrop(min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3)
    theirs = _run_theirs(crop, image, boxes, labels, ignore, monkeypatch, replay)
    _assert_same(out, theirs)
    assert replay.values == [] and crop.mode == ours.params["mode"]


@pytest.mark.parametrize("seed", range(12))
def test_photo_metric_distortion_matches_mmdet(seed):
    image = _image((200, 300), seed)
    step = {"type": "PhotoMetricDistortion", "brightness_delta": 32, "contrast_range": [0.5, 1.5],
            "saturation_range": [0.5, 1.5], "hue_delta": 18}
    out, ours, _ = _run_ours([step, {"type": "HorizontalFlip", "p": 0.0}], image, BOXES, LABELS, IGNORE, seed)
    p = ours.params
    order = p["channel_order"]
    theirs = PhotoMetricDistortion(brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                                   hue_delta=18)
    theirs._random_flags = lambda: (
        int(p["contrast_before_hsv"]), p["brightness"] != 0, p["contrast"] != 1, p["saturation"] != 1, p["hue"] != 0,
        tuple(order) != (0, 1, 2), p["brightness"], p["contrast"], p["saturation"], p["hue"],
        np.array([2 - order[2 - j] for j in range(3)]))     # our RGB permutation seen in BGR
    result = theirs.transform({"img": np.ascontiguousarray(image[..., ::-1])})
    expected = result["img"][..., ::-1].astype(np.float32)   # both unclipped float32
    np.testing.assert_array_equal(out.image.permute(1, 2, 0).numpy(), expected)
