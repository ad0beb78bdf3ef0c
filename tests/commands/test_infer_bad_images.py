"""``gfldet infer`` on a folder with an undecodable image follows ``data.on_bad_image``."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gfldet.cli import main
from gfldet.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quickstart" / "gfl_r18_synthetic.yaml"
SMALL = ["model.neck.out_channels=32", "model.head.feat_channels=32", "model.head.stacked_convs=1",
         "model.head.norm_groups=8"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random weights of the small quickstart model, as a bare state dict."""
    from gfldet.models import build_detector

    path = tmp_path_factory.mktemp("ckpt") / "random.pth"
    torch.manual_seed(0)
    torch.save(build_detector(load_config(CONFIG, SMALL).model).state_dict(), path)
    return path


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "c"):
        assert cv2.imwrite(str(images / f"{name}.png"), np.full((48, 64, 3), 90, np.uint8))
    (images / "b.png").write_bytes(b"\x89PNG not really")
    return images


def _infer(checkpoint, folder, out, policy):
    return main(["infer", str(CONFIG), str(checkpoint), str(folder), "--out", str(out),
                 "--opts", *SMALL, f"data.on_bad_image={policy}"])


def test_skip_leaves_out_and_lists_the_bad_image(checkpoint, folder, tmp_path, capsys):
    assert _infer(checkpoint, folder, tmp_path / "out", "skip") == 0
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [Path(d["file"]).name for d in detections] == ["a.png", "c.png"]
    out = capsys.readouterr().out
    assert "1 unreadable image(s) skipped" in out and "b.png" in out


def test_error_names_the_bad_image_before_any_work(checkpoint, folder, tmp_path, capsys):
    assert _infer(checkpoint, folder, tmp_path / "out", "error") == 1
    err = capsys.readouterr().err
    assert "cannot decode image" in err and "b.png" in err and "data.on_bad_image: skip" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
