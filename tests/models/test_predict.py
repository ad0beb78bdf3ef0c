"""Inference path: decoding from prior centres, clipping, rescaling, thresholds, class-aware NMS, output format."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.models import build_detector

STRIDES = [8, 16, 32, 64, 128]
IMAGE = (64, 96)  # (h, w) of the resized image, also the padded batch size here


@pytest.fixture
def head(small_model_cfg):
    return build_detector(small_model_cfg("model.head.reg_max=7")).head


def _outputs(head, detections):
    """Head outputs with background everywhere except ``detections``: (level, x, y, label, logit, ltrb bins)."""
    sizes = [(math.ceil(IMAGE[0] / s), math.ceil(IMAGE[1] / s)) for s in STRIDES]
    cls = [torch.full((1, head.num_classes, h, w), -10.0) for h, w in sizes]
    reg = [torch.zeros(1, 4 * (head.reg_max + 1), h, w) for h, w in sizes]
    for level, x, y, label, logit, ltrb in detections:
        cls[level][0, label, y, x] = logit
        for side, value in enumerate(ltrb):
            reg[level][0, side * (head.reg_max + 1) + value, y, x] = 50.0
    return cls, reg


def test_decode_from_prior_centre_and_rescale(head):
    # level 0 (stride 8), cell (x=3, y=2) -> centre (24, 16); ltrb (1, 2, 3, 1) bins -> box [16, 0, 48, 24] px
    cls, reg = _outputs(head, [(0, 3, 2, 2, 3.0, (1, 2, 3, 1))])
    [result] = head.predict(cls, reg, [IMAGE], [(2.0, 0.5)])
    assert set(result) == {"boxes", "scores", "labels", "prior_idx"}
    torch.testing.assert_close(result["boxes"], torch.tensor([[8.0, 0.0, 24.0, 48.0]]))
    assert result["prior_idx"].tolist() == [2 * math.ceil(IMAGE[1] / STRIDES[0]) + 3]  # row-major cell (3, 2)
    torch.testing.assert_close(result["scores"], torch.sigmoid(torch.tensor([3.0])))
    assert result["labels"].tolist() == [2] and result["labels"].dtype == torch.int64


def test_boxes_are_clipped_to_the_image_before_rescaling(head):
    # level 1 (stride 16), cell (5, 3) -> centre (80, 48); ltrb (1, 1, 4, 4) * 16 -> [64, 32, 144, 112] -> clip
    cls, reg = _outputs(head, [(1, 5, 3, 0, 2.0, (1, 1, 4, 4))])
    [result] = head.predict(cls, reg, [(60, 90)], [(1.0, 1.0)])
    torch.testing.assert_close(result["boxes"], torch.tensor([[64.0, 32.0, 90.0, 60.0]]))


def test_score_threshold_and_empty_output_format(head):
    cls, reg = _outputs(head, [(0, 3, 2, 1, -3.0, (1, 1, 1, 1))])  # sigmoid(-3) = 0.047 < 0.05
    [result] = head.predict(cls, reg, [IMAGE], [(1.0, 1.0)])
    assert result["boxes"].shape == (0, 4) and result["scores"].shape == (0,) and result["labels"].shape == (0,)


def test_nms_is_class_aware_and_keeps_the_best(head):
    # stride-8 priors; A = [16, 8, 32, 24] (class 0), B = A with class 1, C = A shifted right by 8 px (IoU 1/3),
    # D = A again from the prior below (centre (24, 24), ltrb (1, 2, 1, 0)) with a lower score: suppressed
    cls, reg = _outputs(head, [(0, 3, 2, 0, 2.0, (1, 1, 1, 1)), (0, 3, 2, 1, 1.0, (1, 1, 1, 1)),
                               (0, 4, 2, 0, 1.5, (1, 1, 1, 1)), (0, 3, 3, 0, 0.5, (1, 2, 1, 0))])
    [result] = head.predict(cls, reg, [IMAGE], [(1.0, 1.0)])
    assert result["labels"].tolist() == [0, 0, 1]
    torch.testing.assert_close(result["scores"], torch.sigmoid(torch.tensor([2.0, 1.5, 1.0])))
    torch.testing.assert_close(result["boxes"][[0, 2]], torch.tensor([[16.0, 8, 32, 24], [16.0, 8, 32, 24]]))


def test_max_per_img_and_nms_pre(small_model_cfg):
    head = build_detector(small_model_cfg("model.test_cfg.max_per_img=3", "model.test_cfg.nms_pre=2")).head
    sizes = [(math.ceil(IMAGE[0] / s), math.ceil(IMAGE[1] / s)) for s in STRIDES]
    cls = [torch.full((2, 4, h, w), 4.0) for h, w in sizes]
    reg = [torch.zeros(2, 68, h, w) for h, w in sizes]
    results = head.predict(cls, reg, [IMAGE, IMAGE], [(1.0, 1.0), (1.0, 1.0)])
    assert [len(r["boxes"]) for r in results] == [3, 3]


def test_detector_predict_end_to_end(small_model_cfg):
    model = build_detector(small_model_cfg("model.test_cfg.score_thr=0.0")).eval()
    results = model.predict(torch.randn(2, 3, 64, 96), [(64, 96), (50, 70)], [(0.5, 0.5), (1.0, 1.0)])
    assert len(results) == 2
    boxes = results[1]["boxes"]
    assert 0 < len(boxes) <= 100 and boxes[:, 2].max() <= 70 and boxes[:, 3].max() <= 50
    assert results[0]["boxes"][:, 2].max() <= 96 / 0.5


def test_select_candidates_is_the_per_level_threshold_and_top_k_image_by_image():
    from gfldet.models.heads.postprocess import select_candidates

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 30, 4, generator=g)
    scores[1] = 0.0  # an image without any candidate
    num_per_level, score_thr, nms_pre = [20, 6, 4], 0.5, 5
    image_idx, prior_idx, labels, picked = select_candidates(scores, num_per_level, score_thr=score_thr,
                                                             nms_pre=nms_pre)
    expected, start = {0: [], 1: [], 2: []}, 0
    for count in num_per_level:  # the reference: one image and one level at a time
        for i in range(3):
            top, index = scores[i, start:start + count].flatten().topk(min(nms_pre, count * 4))
            expected[i] += [(start + j // 4, j % 4, s) for s, j in zip(top.tolist(), index.tolist()) if s > score_thr]
        start += count
    flat = [(p, lab, s) for i in range(3) for p, lab, s in expected[i]]
    assert image_idx.tolist() == [i for i in range(3) for _ in expected[i]] and not expected[1]
    assert list(zip(prior_idx.tolist(), labels.tolist(), picked.tolist())) == flat


def test_postprocess_keeps_images_apart_when_one_has_no_detection(head):
    cls, reg = _outputs(head, [(0, 3, 2, 2, 3.0, (1, 2, 3, 1))])
    cls, reg = [torch.cat([c, torch.full_like(c, -10.0), c]) for c in cls], [torch.cat([r, r, r]) for r in reg]
    results = head.predict(cls, reg, [IMAGE] * 3, [(2.0, 0.5), (1.0, 1.0), (1.0, 1.0)])
    assert [len(r["boxes"]) for r in results] == [1, 0, 1]
    torch.testing.assert_close(results[0]["boxes"], torch.tensor([[8.0, 0.0, 24.0, 48.0]]))
    torch.testing.assert_close(results[2]["boxes"], torch.tensor([[16.0, 0.0, 48.0, 24.0]]))
