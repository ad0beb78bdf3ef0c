"""Small GFL detectors built from the real base config (ResNet-18, 32-channel FPN/head) for fast model tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from gfldet.config import load_config

BASE_CONFIG = Path(__file__).parents[2] / "configs/_base_/models/gfl_r50_fpn.yaml"
SMALL = ["model.backbone.depth=18", "model.backbone.pretrained=false", "model.num_classes=4",
         "model.neck.out_channels=32", "model.head.feat_channels=32", "model.head.stacked_convs=1"]


@pytest.fixture
def small_model_cfg():
    """``model`` section of a small GFL detector; pass extra overrides through ``small_model_cfg(...)``."""
    def make(*overrides: str):
        return load_config(BASE_CONFIG, SMALL + list(overrides)).model
    return make
