"""Building datasets and loaders from the ``data`` config section (keys documented in
``configs/_base_/datasets/coco_detection.yaml``, where every default lives)."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader

from gfldet.config import Config, ConfigError, check_keys
from gfldet.data.annotations import load_coco_json
from gfldet.data.batching import collate
from gfldet.data.coco import CocoDetection
from gfldet.data.problems import ANNOTATION_POLICIES, IMAGE_POLICIES, check_policy
from gfldet.data.samplers import AspectRatioBatchSampler, ShardBatchSampler
from gfldet.data.transforms import build_transform

__all__ = ["build_dataset", "build_dataloader", "check_data_section", "fill_num_classes", "DATA_KEYS", "SPLITS"]

SPLITS = ("train", "val", "test")
DATA_KEYS = ("batch_size", "num_workers", "persistent_workers", "pin_memory", "size_divisor", "mean", "std",
             "on_bad_image", "on_bad_annotation", *SPLITS)
SPLIT_KEYS = {"train": ("ann_file", "img_dir", "transforms", "filter_empty", "min_size"),
              "val": ("ann_file", "img_dir", "transforms", "batch_size"),
              "test": ("ann_file", "img_dir", "transforms", "batch_size")}


def _required(section: Config, key: str):
    if key not in section:
        raise ConfigError(f"{section.where()}: missing key '{section.dotted(key)}' (inherit "
                          f"configs/_base_/datasets/coco_detection.yaml or set it)")
    return section[key]


def _required_int(section: Config, key: str, *, low: int) -> int:
    _required(section, key)
    return section.get_int(key, low=low)


def _split_cfg(data_cfg: Config, split: str) -> Config:
    if split not in SPLITS:
        raise ConfigError(f"unknown data split '{split}'; expected one of {', '.join(SPLITS)}")
    check_keys(data_cfg, DATA_KEYS, where="data")
    section = _required(data_cfg, split)
    check_keys(section, SPLIT_KEYS[split], where=f"data.{split}")
    return section


def check_data_section(data_cfg: Config) -> list[str]:
    """Check the keys of ``data`` and of each of its splits, and both bad-input policies; returns its splits."""
    check_keys(data_cfg, DATA_KEYS, where="data")
    splits = [split for split in SPLITS if split in data_cfg]
    for split in splits:
        _split_cfg(data_cfg, split)
    for name, allowed in (("on_bad_image", IMAGE_POLICIES), ("on_bad_annotation", ANNOTATION_POLICIES)):
        check_policy(name, _required(data_cfg, name), allowed, where=data_cfg.where(name))
    return splits


def build_dataset(data_cfg: Config, split: str) -> CocoDetection:
    """The CocoDetection of ``data.<split>`` with its transforms. Paths are relative to the working directory."""
    data_cfg = data_cfg if isinstance(data_cfg, Config) else Config(data_cfg, path="data")
    section = _split_cfg(data_cfg, split)
    transform = build_transform(_required(section, "transforms"), where=section.dotted("transforms"))
    return CocoDetection(
        ann_file=_required(section, "ann_file"), img_dir=_required(section, "img_dir"), transform=transform,
        filter_empty=bool(_required(section, "filter_empty")) if split == "train" else False,
        min_size=section.get_int("min_size", low=0) if split == "train" and "min_size" in section else 0,
        on_bad_image=_required(data_cfg, "on_bad_image"), on_bad_annotation=_required(data_cfg, "on_bad_annotation"),
    )


def _normalisation(data_cfg: Config, key: str) -> list[float]:
    values = _required(data_cfg, key)
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise ConfigError(f"{data_cfg.where(key)}: data.{key} must be 3 numbers (RGB), got {values!r}")
    return [float(v) for v in values]


def build_dataloader(data_cfg: Config, split: str, *, distributed: bool = False, seed: int = 0,
                     dataset: CocoDetection | None = None) -> DataLoader:
    """A DataLoader yielding ``Batch``: ``data.batch_size`` images per process (per GPU) in training,
    ``data.<split>.batch_size`` in evaluation.

    train: AspectRatioBatchSampler (shuffled, orientation-grouped, deterministic from (seed, epoch); call
    ``loader.batch_sampler.set_epoch(e)`` each epoch and ``skip_batches(n)`` to resume mid-epoch).
    val/test: every image once, in file order, sharded over ranks. ``distributed=True`` takes rank and world size
    from torch.distributed; otherwise a single process is assumed. ``dataset`` reuses an already built dataset.
    """
    data_cfg = data_cfg if isinstance(data_cfg, Config) else Config(data_cfg, path="data")
    dataset = build_dataset(data_cfg, split) if dataset is None else dataset
    # evaluation has its own batch size: images of a batch are padded to the largest, and the padding changes
    # the features near their bottom/right borders, so 1 is the reference protocol (coco_detection.yaml)
    batch_section = data_cfg if split == "train" else _split_cfg(data_cfg, split)
    batch_size = _required_int(batch_section, "batch_size", low=1)
    rank_world = {} if distributed else {"rank": 0, "world_size": 1}
    if split == "train":
        sampler = AspectRatioBatchSampler(portrait=dataset.aspect_flags(), batch_size=batch_size, seed=seed,
                                          **rank_world)
    else:
        sampler = ShardBatchSampler(num_samples=len(dataset), batch_size=batch_size, **rank_world)
    num_workers = _required_int(data_cfg, "num_workers", low=0)
    if num_workers > 0:
        # As mmdetection: no OpenCV thread pool in this process before forking workers. A pool inherited by a
        # forked worker deadlocks on first use; and the workers already run in parallel.
        cv2.setNumThreads(0)
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisor=_required_int(data_cfg, "size_divisor", low=1),
                                     mean=_normalisation(data_cfg, "mean"), std=_normalisation(data_cfg, "std")),
        pin_memory=bool(_required(data_cfg, "pin_memory")) and torch.cuda.is_available(),
        persistent_workers=bool(_required(data_cfg, "persistent_workers")) and num_workers > 0,
    )


def fill_num_classes(cfg: Config, *, dataset: CocoDetection | None = None) -> int:
    """Set ``cfg.model.num_classes`` from the training annotation file when absent; check it when present.

    Returns the number of classes. Raises ConfigError naming both sources on a mismatch.
    """
    if dataset is not None:
        num_classes, names, source = dataset.num_classes, dataset.class_names, dataset.ann_file
    else:
        section = _split_cfg(cfg.data, "train")
        source = _required(section, "ann_file")
        categories = sorted(load_coco_json(source)["categories"], key=lambda c: c["id"])
        num_classes, names = len(categories), [c["name"] for c in categories]
    model = cfg.model
    if model.get("num_classes") is None:
        model["num_classes"] = num_classes
        model.set_origin("num_classes", f"{Path(source)} (categories)")
    elif int(model["num_classes"]) != num_classes:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise ConfigError(f"{model.where('num_classes')}: model.num_classes is {model['num_classes']} but the "
                          f"training annotations {source} have {num_classes} categories ({shown}); set "
                          f"model.num_classes: null to take it from the annotation file, or fix it")
    return num_classes
