"""Helpers of the data-layer tests: COCO files and images written on the fly, data sections, BCCD location."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from gfldet.config import Config
from tests.bccd import bccd_root  # noqa: F401  (the data tests import it from here)

REPO = Path(__file__).resolve().parents[2]
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def data_cfg(train: dict, val: dict | None = None, **overrides) -> Config:
    """A complete ``data`` section (the base YAML's defaults) around the given split sections."""
    section = {"batch_size": 2, "num_workers": 0, "persistent_workers": False, "pin_memory": False,
               "size_divisor": 32, "mean": MEAN, "std": STD, "on_bad_image": "error", "on_bad_annotation": "drop",
               "train": {"filter_empty": True, "transforms": [{"type": "Resize", "scale": [1333, 800]}], **train}}
    if val is not None:
        section["val"] = {"transforms": [{"type": "Resize", "scale": [1333, 800]}], "batch_size": 1, **val}
    section.update(overrides)
    return Config(section, path="data")


def write_image(path: Path, height: int, width: int, channels: int = 3, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width) if channels == 1 else (height, width, channels)
    assert cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def write_coco(directory: Path, images: list[tuple[int, int, int]], annotations: list[dict], *,
               make_files: bool = True, categories=None) -> Path:
    """``images``: (id, height, width) -> ``img_{id}.png`` files; annotations given as dicts without ``id``."""
    entries = [{"id": i, "file_name": f"img_{i}.png", "height": h, "width": w} for i, h, w in images]
    if make_files:
        for i, h, w in images:
            write_image(directory / f"img_{i}.png", h, w)
    anns = [{"id": k + 1, "iscrowd": 0, **a} for k, a in enumerate(annotations)]
    categories = categories or [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]
    path = directory / "ann.json"
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": categories}))
    return path
