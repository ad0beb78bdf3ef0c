"""Box-side distributions: the kept detections with their priors' logits, and the PNG figure."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gfldet.analysis import detections_with_distributions, plot_box_distributions, save_box_distributions
from gfldet.box_coding import distance2bbox, integral_bins, integral_distance
from tests.export.tiny_models import tiny_detector

SCALES = [(1.0, 1.0), (0.5, 0.8)]  # (sx, sy) = resized / original: the second image was shrunk


@pytest.fixture(scope="module")
def outputs():
    model = tiny_detector(seed=4)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 160, 224)
    sizes = [(160, 224), (150, 200)]
    return model, detections_with_distributions(model, images, sizes, SCALES), \
        model.predict(images, sizes, SCALES), sizes


def test_detections_are_exactly_those_of_predict(outputs):
    _, with_dist, predicted, _ = outputs
    for dets, pred in zip(with_dist, predicted):
        assert len(dets) == len(pred["boxes"]) > 0
        assert torch.equal(dets.boxes, pred["boxes"]) and torch.equal(dets.scores, pred["scores"])
        assert torch.equal(dets.labels, pred["labels"])


def test_the_attached_distributions_decode_to_the_detected_boxes(outputs):
    model, with_dist, _, sizes = outputs
    bins = integral_bins(model.head.reg_max)
    for dets, (h, w), (sx, sy) in zip(with_dist, sizes, SCALES):
        assert dets.side_logits.shape == (len(dets), 4, 17) and dets.bin_width == 1.0
        assert set(dets.strides.tolist()) <= {8.0, 16.0, 32.0, 64.0, 128.0}
        scale = torch.tensor([sx, sy, sx, sy])
        distances = integral_distance(dets.side_logits.flatten(1), bins) * dets.strides[:, None]
        boxes = distance2bbox(dets.centers * scale[:2], distances, max_shape=(h, w)) / scale
        torch.testing.assert_close(boxes, dets.boxes, rtol=1e-5, atol=1e-3)


def test_figure_is_a_png_of_the_documented_size(outputs, tmp_path):
    _, with_dist, _, _ = outputs
    dets = with_dist[1]
    image = np.random.default_rng(0).integers(0, 255, (188, 280, 3), dtype=np.uint8)  # 150/0.8 x 200/0.5 -> orig
    paths = save_box_distributions(image, dets, tmp_path, stem="img", top_k=2, class_names=["a", "b", "c", "d"])
    assert [p.name for p in paths] == ["img_0.png", "img_1.png"]
    threshold = float(dets.scores[0] + dets.scores[1]) / 2  # only the best detection scores above it
    assert len(save_box_distributions(image, dets, tmp_path / "thr", top_k=5, min_score=threshold)) == 1
    for path in paths:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == (700, 600)


def test_expectation_lines_sit_on_the_box_edges():
    logits = torch.full((4, 17), -20.0)
    logits[:, 3] = 20.0  # every side 3 bins = 3 * 8 px from the centre at (50, 40)
    fig = plot_box_distributions(np.zeros((100, 120, 3), np.uint8), box=[26, 16, 74, 64], center=[50, 40],
                                 side_logits=logits, stride=8)
    image_axes = fig.axes[0]
    xs = sorted(line.get_xdata()[0] for line in image_axes.lines[1:] if line.get_xdata()[0] == line.get_xdata()[1])
    assert xs == pytest.approx([26.0, 74.0], abs=1e-6)


def test_wrong_logit_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\[4, n\+1\]"):
        plot_box_distributions(np.zeros((10, 10, 3), np.uint8), box=[0, 0, 5, 5], center=[2, 2],
                               side_logits=torch.zeros(68), stride=8)
