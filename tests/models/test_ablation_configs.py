"""Every ablation config builds (with the registry lines docs/ablations notes ask for), runs a loss step and a
prediction on a tiny input, and the configs cover every row of the paper tables they reproduce."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gfldet.models as models
from gfldet.config import apply_overrides, load_config
from gfldet.engine.paper_numbers import PAPER_TABLES
from gfldet.engine.report import ablation_rows

ROOT = Path(__file__).parents[2]
CONFIGS = sorted((ROOT / "configs/ablations").glob("*.yaml")) + [ROOT / "configs/atss/atss_r50_fpn_1x_coco.yaml"]
TINY = ["model.backbone.depth=18", "model.backbone.pretrained=false", "model.num_classes=3",
        "model.neck.out_channels=16", "model.head.feat_channels=16", "model.head.stacked_convs=1",
        "model.head.norm_groups=4"]
TINY_SSD = ["model.backbone.pretrained=false", "model.num_classes=3"]
REPRODUCED_TABLES = ("1a", "1b", "1c", "2a", "2b", "2c", "3")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_trains_and_predicts(path):
    cfg = load_config(path)
    ssd = cfg.model.backbone.type == "ssd_vgg"  # full VGG-16; SSD512's neck needs an input of at least ~300 px
    cfg = apply_overrides(cfg, TINY_SSD if ssd else TINY)
    torch.manual_seed(0)
    model = models.build_detector(cfg.model)
    images = torch.randn(2, 3, 320, 320) if ssd else torch.randn(2, 3, 96, 128)
    sizes = [(320, 320)] * 2 if ssd else [(96, 128), (80, 128)]
    boxes = [torch.tensor([[8.0, 10.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0]]),
             torch.tensor([[20.0, 5.0, 90.0, 75.0]])]
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    losses = model(images, sizes, boxes, labels)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0, losses
    total.backward()
    model.eval()
    detections = model.predict(images, sizes, [(1.0, 1.0)] * 2)
    assert len(detections) == 2


def test_configs_cover_every_row_of_the_reproduced_tables_once():
    served = {}
    for path in CONFIGS:
        cfg = load_config(path)
        if "ablation" in cfg:
            for pair in ablation_rows(cfg.to_dict()["ablation"], str(path)):
                assert pair not in served, f"{pair} served by {served.get(pair)} and {path.name}"
                served[pair] = path.name
    expected = {(t, r) for t in REPRODUCED_TABLES for r in PAPER_TABLES[t].rows}
    assert expected <= set(served), sorted(expected - set(served))


@pytest.mark.parametrize("path", [p for p in CONFIGS if "ablation" in load_config(p)], ids=lambda p: p.stem)
def test_giou_weight_is_the_detector_s_own(path):
    """mmdetection's FCOS weighs GIoU 1.0, its ATSS and GFL 2.0; the FCOS rows inherit the ATSS config."""
    head = load_config(path).model.head
    if head.type in ("fcos", "atss"):
        assert head.loss_bbox.loss_weight == (1.0 if head.type == "fcos" else 2.0)
