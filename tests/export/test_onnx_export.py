"""ONNX export: every view runs in onnxruntime and matches PyTorch within the documented tolerance.

Tolerances (float32, CPU onnxruntime vs PyTorch): logits 1e-4 absolute; scores 1e-5 absolute; boxes 1e-5 relative
+ 1e-2 px absolute (distances reach reg_max * 128 = 2048 px); labels and the number of detections exactly equal.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from gfldet.data.coco import read_rgb
from gfldet.config import Config
from gfldet.export import VIEWS, DecodedOutputs, ExportError, default_input_size, export_onnx
from tests.export.tiny_models import bccd_image, detector, synthetic_images, to_input  # noqa: F401 (fixtures)

LOGIT_ATOL, SCORE_ATOL, BOX_ATOL, BOX_RTOL = 1e-4, 1e-5, 1e-2, 1e-5


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, images: torch.Tensor) -> list[np.ndarray]:
    return sess.run(None, {"images": images.numpy()})


@pytest.fixture(scope="module")
def onnx_files(detector, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return {view: export_onnx(detector, out / f"{view}.onnx", view=view, input_size=(256, 320), dynamic=True)
            for view in ("raw", "decoded", "detections")}


def test_raw_outputs_match_at_two_sizes_and_batch_sizes(detector, onnx_files, synthetic_images):
    sess = session(onnx_files["raw"])
    outputs = sess.get_outputs()
    assert [o.name for o in outputs][:2] == ["cls_logits_s8", "cls_logits_s16"]
    assert outputs[0].shape == ["batch", 4, "height_s8", "width_s8"]
    assert outputs[9].name == "reg_logits_s128" and outputs[9].shape == ["batch", 68, "height_s128", "width_s128"]
    torch.manual_seed(1)
    for images in (torch.randn(2, 3, 256, 320), to_input(synthetic_images[1]), torch.randn(1, 3, 192, 416)):
        cls_scores, bbox_preds = detector.raw_outputs(images)
        outputs = run(sess, images)
        assert len(outputs) == 10
        for got, want in zip(outputs, [*cls_scores, *bbox_preds]):
            assert got.shape == tuple(want.shape)
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=LOGIT_ATOL)


def test_decoded_scores_and_boxes_match(detector, onnx_files, synthetic_images):
    sess = session(onnx_files["decoded"])
    for images in (to_input(synthetic_images[0]), torch.randn(2, 3, 320, 224)):
        scores, boxes = run(sess, images)
        want_scores, want_boxes = DecodedOutputs(detector)(images)
        np.testing.assert_allclose(scores, want_scores.detach().numpy(), rtol=0, atol=SCORE_ATOL)
        np.testing.assert_allclose(boxes, want_boxes.detach().numpy(), rtol=BOX_RTOL, atol=BOX_ATOL)


def test_decoded_boxes_agree_with_the_heads_priors_and_decoder(detector):
    images = torch.randn(1, 3, 128, 160)
    cls_scores, bbox_preds = detector.raw_outputs(images)
    head = detector.head
    priors = head.priors_for(cls_scores)
    reg = torch.cat([m.permute(0, 2, 3, 1).reshape(-1, m.shape[1]) for m in bbox_preds])
    want = head.decode_boxes(reg, priors, torch.arange(len(reg)))
    _, boxes = DecodedOutputs(detector)(images)
    torch.testing.assert_close(boxes[0], want)


def _assert_same_detections(got: list[np.ndarray], want: dict) -> None:
    boxes, scores, labels = got
    assert len(scores) == len(want["scores"]) > 0
    np.testing.assert_array_equal(labels, want["labels"].numpy())
    np.testing.assert_allclose(scores, want["scores"].numpy(), rtol=0, atol=SCORE_ATOL)
    np.testing.assert_allclose(boxes, want["boxes"].numpy(), rtol=BOX_RTOL, atol=BOX_ATOL)


def test_detections_with_nms_match_predict_on_random_synthetic_and_real_images(detector, onnx_files,
                                                                             synthetic_images):
    sess = session(onnx_files["detections"])
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores", "labels"]
    torch.manual_seed(2)
    inputs = [torch.randn(1, 3, 256, 320), *(to_input(image) for image in synthetic_images),
              to_input(read_rgb(bccd_image()))]
    for images in inputs:
        size = tuple(images.shape[-2:])
        want = detector.predict(images, [size], [(1.0, 1.0)])[0]
        _assert_same_detections(run(sess, images), want)


def test_detections_apply_the_score_threshold_and_max_per_image(detector, onnx_files):
    boxes, scores, labels = run(session(onnx_files["detections"]), torch.randn(1, 3, 256, 320))
    cfg = detector.head.test_cfg
    assert len(scores) == cfg.max_per_img  # the spread head scores many priors above the threshold
    assert (scores > cfg.score_thr).all() and (np.diff(scores) <= 0).all()
    assert labels.dtype == np.int64 and boxes.shape == (len(scores), 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 256).all()


def test_static_export_holds_metadata_and_fixed_shape(detector, tmp_path):
    path = export_onnx(detector, tmp_path / "static.onnx", view="raw", input_size=(128, 160), opset=13,
                       metadata={"class_names": ["a", "b", "c", "d"]})
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["gfldet_view"] == "raw" and meta["num_classes"] == "4" and meta["reg_max"] == "16"
    assert meta["class_names"] == '["a", "b", "c", "d"]'
    assert proto.opset_import[0].version == 13
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 128, 160]


@pytest.mark.parametrize("view", ["raw", "decoded"])
def test_static_export_takes_one_image_unless_batch_is_given(detector, tmp_path, view):
    images = torch.randn(3, 3, 128, 160)
    want = VIEWS[view](detector)(images)
    one = run(session(export_onnx(detector, tmp_path / "one.onnx", view=view, input_size=(128, 160))), images[:1])
    three = run(session(export_onnx(detector, tmp_path / "three.onnx", view=view, input_size=(128, 160), batch=3)),
                images)
    tolerance = {"rtol": BOX_RTOL, "atol": LOGIT_ATOL if view == "raw" else BOX_ATOL}
    for got_one, got_three, expected in zip(one, three, want):
        np.testing.assert_allclose(got_one, expected[:1].detach().numpy(), **tolerance)
        np.testing.assert_allclose(got_three, expected.detach().numpy(), **tolerance)


@pytest.mark.parametrize("kwargs, message", [({"opset": 9}, "opset >= 11"),
                                             ({"input_size": (100, 160)}, "multiple of the size divisor 32"),
                                             ({"view": "boxes"}, "unknown export view"),
                                             ({"batch": 0}, "batch must be >= 1"),
                                             ({"view": "detections", "batch": 2}, "takes one image")])
def test_bad_settings_are_clear_errors(detector, tmp_path, kwargs, message):
    settings = {"view": "raw", "input_size": (128, 160), **kwargs}
    with pytest.raises(ExportError, match=message):
        export_onnx(detector, tmp_path / "x.onnx", **settings)


def test_default_input_size_is_the_padded_landscape_test_resize():
    data = {"size_divisor": 32, "test": {"transforms": [{"type": "Resize", "scale": [1333, 800]}]}}
    assert default_input_size(Config({"data": data})) == (800, 1344)
    exact = {"size_divisor": 1, "test": {"transforms": [{"type": "Resize", "scale": [300, 500], "keep_ratio": False}]}}
    assert default_input_size(Config({"data": exact})) == (500, 300)  # [width, height]: a portrait size stays one
    with pytest.raises(ExportError, match="--input-size"):
        default_input_size(Config({"data": {"test": {"transforms": []}}}))
