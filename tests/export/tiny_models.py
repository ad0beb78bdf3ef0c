"""Shared helpers of the show-and-ship tests: a tiny GFL detector, its config file, images as network input.

The fixtures ``detector`` and ``synthetic_images`` are imported by the test modules that use them (the analysis,
export and command tests share them, so they live in this module rather than in one folder's conftest.py).
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gfldet.config import Config
from gfldet.data.coco import read_rgb
from gfldet.data.synthetic import SynthSpec, generate_synthetic
from gfldet.models import build_detector
from tests.bccd import bccd_root

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "configs" / "_base_"
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
# ResNet-18, 32-channel FPN and head with one conv per tower: ~11 M parameters, exports in about a second.
TINY_MODEL = {"num_classes": 4, "backbone": {"depth": 18, "pretrained": False, "frozen_stages": -1},
              "neck": {"out_channels": 32}, "head": {"feat_channels": 32, "stacked_convs": 1, "norm_groups": 8}}


def write_tiny_config(path: Path, data_dir: Path | None = None) -> Path:
    """A YAML config: the base GFL model shrunk to TINY_MODEL, the synthetic dataset (rooted at ``data_dir``)."""
    bases = [str(BASE / "models/gfl_r50_fpn.yaml"), str(BASE / "datasets/synthetic.yaml"),
             str(BASE / "schedules/schedule_1x.yaml"), str(BASE / "default_runtime.yaml")]
    cfg: dict = {"_base_": bases, "model": TINY_MODEL}
    if data_dir is not None:
        splits = {split: {"ann_file": str(data_dir / f"{name}.json"), "img_dir": str(data_dir)}
                  for split, name in (("train", "train"), ("val", "val"), ("test", "val"))}
        cfg["data"] = {"num_workers": 0, "persistent_workers": False, **splits}
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_detector(seed: int = 0) -> torch.nn.Module:
    """The tiny detector in eval mode, its prediction convs re-initialised so that scores spread over (0, 1)
    without saturating (an untrained head scores every prior ~0.01, below the 0.05 threshold) and the box
    distributions differ from prior to prior."""
    cfg = Config({**yaml.safe_load((BASE / "models/gfl_r50_fpn.yaml").read_text())["model"]}, path="model")
    for key, value in TINY_MODEL.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    torch.manual_seed(seed)
    model = build_detector(cfg).eval()
    torch.nn.init.normal_(model.head.cls_pred.weight, std=0.05)
    torch.nn.init.constant_(model.head.cls_pred.bias, -1.0)
    torch.nn.init.normal_(model.head.reg_pred.weight, std=0.1)
    return model


def to_input(image_rgb: np.ndarray, divisor: int = 32) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, H', W'] normalised, zero-padded bottom/right to a multiple of ``divisor``."""
    height, width = image_rgb.shape[:2]
    padded = np.zeros((-(-height // divisor) * divisor, -(-width // divisor) * divisor, 3), np.float32)
    padded[:height, :width] = (image_rgb.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(padded).permute(2, 0, 1)[None].contiguous()


def bccd_image() -> Path:
    """The first BCCD JPEG (see tests/bccd.py: skip when absent, fail under CI)."""
    return sorted((bccd_root() / "JPEGImages").glob("*.jpg"))[0]


def run_command(name: str, argv: list[str]) -> int:
    """Parse ``argv`` with ``gfldet.commands.<name>``'s own arguments and run it, as gfldet.cli does."""
    module = importlib.import_module(f"gfldet.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"gfldet {name}")
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


@pytest.fixture(scope="session")
def detector() -> torch.nn.Module:
    return tiny_detector()


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory) -> list[np.ndarray]:
    """Two RGB uint8 images of the synthetic dataset (256x320 landscape and whatever the generator draws)."""
    out = tmp_path_factory.mktemp("synth_export")
    generate_synthetic(SynthSpec(num_train=0, num_val=2, height=256, width=320, seed=5), out)
    return [read_rgb(path) for path in sorted((out / "images").glob("val_*.jpg"))]
