"""A few training iterations + COCO evaluation on synthetic data for one config of each head type of the ablations
(the engine's train path with the ablation registry lines patched in)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gfldet.models as models
from gfldet.assigners.fcos import FCOSAssigner
from gfldet.assigners.fovea import FoveaAssigner
from gfldet.assigners.max_iou import MaxIoUAssigner
from gfldet.config import apply_overrides, load_config
from gfldet.data.synthetic import SynthSpec, generate_synthetic
from gfldet.engine.evaluator import METRIC_KEYS
from gfldet.engine.launch import build_evaluate_fn, train
from gfldet.losses.l1 import L1Loss
from gfldet.losses.soft_focal import SoftFocalLoss
from gfldet.models.heads.atss_head import ATSSHead
from gfldet.models.heads.fcos_head import FCOSHead
from gfldet.models.heads.fovea_head import FoveaHead
from gfldet.models.heads.retina_head import RetinaHead

ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def ablation_registry(monkeypatch):
    for name, head in (("atss", ATSSHead), ("fcos", FCOSHead), ("retina", RetinaHead), ("fovea", FoveaHead)):
        monkeypatch.setitem(models.HEADS, name, head)
    for name, assigner in (("fcos", FCOSAssigner), ("max_iou", MaxIoUAssigner), ("fovea", FoveaAssigner)):
        monkeypatch.setitem(models.ASSIGNERS, name, assigner)
    monkeypatch.setitem(models.LOSSES, "soft_focal", SoftFocalLoss)
    monkeypatch.setitem(models.LOSSES, "l1", L1Loss)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(SynthSpec(num_train=4, num_val=2, height=96, width=128, seed=7), out)
    return out


def overrides(data: Path) -> list[str]:
    resize = "[{type: Resize, scale: [128, 128]}]"
    return ["model.backbone.depth=18", "model.backbone.pretrained=false", "model.num_classes=4",
            "model.neck.out_channels=16", "model.head.feat_channels=16", "model.head.stacked_convs=1",
            "model.head.norm_groups=4", "data.batch_size=2", "data.num_workers=0", "data.persistent_workers=false",
            f"data.train.ann_file={data}/train.json", f"data.train.img_dir={data}", f"data.train.transforms={resize}",
            f"data.val.ann_file={data}/val.json", f"data.val.img_dir={data}", f"data.val.transforms={resize}",
            "train.max_epochs=null", "train.max_iters=2", "train.eval_interval=0", "train.checkpoint_interval=2",
            "train.device=cpu", "train.tensorboard=false", "train.log_interval=1", "train.lr_schedule.by_epoch=false",
            "train.lr_schedule.warmup_iters=1", "evaluation.backend=pycocotools"]


@pytest.mark.parametrize("name", ["table1a_atss_iou_branch", "table2a_fcos_gaussian", "table1b_retina_qfl",
                                  "table1b_fovea_qfl"])
def test_trains_two_iterations_and_evaluates(name, synthetic, tmp_path):
    cfg = apply_overrides(load_config(ROOT / f"configs/ablations/{name}.yaml"), overrides(synthetic))
    trainer = train(cfg, work_dir=tmp_path)
    assert (tmp_path / "latest.pth").is_file() and "ablation" in (tmp_path / "config.yaml").read_text()
    metrics = build_evaluate_fn(cfg, device=torch.device("cpu"), amp="off")(trainer.eval_model)
    assert set(METRIC_KEYS) <= set(metrics)
