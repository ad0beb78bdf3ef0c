"""TorchScript export: the traced detections view (decode + NMS) reproduces ``predict`` at the traced size and at
another size (the raw and decoded views are simpler subsets; tests/commands/test_export.py runs the decoded one)."""
from __future__ import annotations

import pytest
import torch

from gfldet.export import export_torchscript
from tests.export.tiny_models import detector, synthetic_images, to_input  # noqa: F401 (fixtures)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_traced_detections_match_predict_at_another_size(detector, tmp_path, synthetic_images):
    traced = torch.jit.load(str(export_torchscript(detector, tmp_path / "det.pt", view="detections",
                                                   input_size=(256, 320))))
    for images in (to_input(synthetic_images[0]), torch.randn(1, 3, 192, 288)):
        boxes, scores, labels = traced(images)
        want = detector.predict(images, [tuple(images.shape[-2:])], [(1.0, 1.0)])[0]
        assert len(scores) == len(want["scores"]) > 0
        torch.testing.assert_close(labels, want["labels"])
        torch.testing.assert_close(scores, want["scores"], rtol=0, atol=1e-6)
        torch.testing.assert_close(boxes, want["boxes"], rtol=1e-5, atol=1e-3)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_traced_raw_outputs_accept_any_batch(detector, tmp_path):
    traced = torch.jit.load(str(export_torchscript(detector, tmp_path / "raw.pt", view="raw", input_size=(128, 160))))
    for batch in (1, 3):
        images = torch.randn(batch, 3, 128, 160)
        cls_scores, bbox_preds = detector.raw_outputs(images)
        for got, want in zip(traced(images), [*cls_scores, *bbox_preds]):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
