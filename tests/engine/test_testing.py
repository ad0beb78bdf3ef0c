import contextlib
import io
import json

import pytest
import torch
from pycocotools.coco import COCO

from gfldet.config import load_config
from gfldet.engine.testing import _write_error_analysis, load_detector
from gfldet.models import build_detector
from tests.models.conftest import BASE_CONFIG, SMALL

QUICKSTART = BASE_CONFIG.parents[2] / "quickstart/gfl_r18_synthetic.yaml"


def test_load_detector_never_loads_imagenet_weights(tmp_path):
    # The COCO configs say `pretrained: torchvision`; evaluating a checkpoint must not download (or read) ImageNet
    # weights, which the checkpoint overwrites anyway. A path that does not exist would fail if it were loaded.
    cfg = load_config(BASE_CONFIG, SMALL)
    trained = build_detector(cfg.model)
    torch.save({"model": trained.state_dict(), "meta": {}}, tmp_path / "ckpt.pth")
    cfg = load_config(BASE_CONFIG, [*SMALL, f"model.backbone.pretrained={tmp_path / 'missing.pth'}"])
    model, _ = load_detector(cfg, tmp_path / "ckpt.pth", torch.device("cpu"))
    assert cfg.model.backbone.pretrained.endswith("missing.pth")  # the caller's config is left as it was
    images = torch.randn(1, 3, 128, 160)  # P7 must hold 2+ values per GroupNorm group
    with torch.no_grad():
        expected = trained.eval().raw_outputs(images)[0][0]
        torch.testing.assert_close(model.raw_outputs(images)[0][0], expected, rtol=1e-4, atol=1e-4)


def test_show_dist_of_a_head_without_distributions_is_refused_before_any_output(tmp_path, monkeypatch):
    from gfldet.engine import testing
    from gfldet.errors import GfldetError

    cfg = load_config(QUICKSTART)
    model = build_detector(cfg.model)
    del model.head.reg_max  # as the RetinaNet / SSD / Dirac ablation heads
    monkeypatch.setattr(testing, "load_detector", lambda *args: (model, {}))
    with pytest.raises(GfldetError, match="--show-dist draws GFL's learned box distributions; GFLHead"):
        testing.infer_images(cfg, "unused.pth", [tmp_path / "missing.jpg"], out_dir=tmp_path / "out", score_thr=0.3,
                             show_dist=2)
    assert not (tmp_path / "out").exists()


def _reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


def test_error_analysis_json_has_null_where_there_is_no_gt(tmp_path, capsys):
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "cell"}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900,
                                     "iscrowd": 0}]}  # one small cell: no medium or large GT
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    detections = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9}]
    _write_error_analysis(coco, detections, [1], tmp_path)
    analysis = json.loads((tmp_path / "error_analysis.json").read_text(), parse_constant=_reject)  # strict JSON
    assert analysis["ap"]["large"] is None and analysis["per_class"]["cell"]["medium"] is None
    assert analysis["ap"]["small"] == pytest.approx(1.0)
    assert "| cell | 1.000 | 1.000 | - | - |" in capsys.readouterr().out
    assert (tmp_path / "error_analysis.png").read_bytes()[:4] == b"\x89PNG"
