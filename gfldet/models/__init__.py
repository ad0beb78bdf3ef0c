"""Detector models: ``build_detector(cfg.model)`` -> :class:`Detector` (backbone -> neck -> dense head).

The ``model`` config section::

    num_classes: 80
    backbone: {type: resnet | timm | ssd_vgg, ...}   # see gfldet.models.backbones, gfldet.models.vgg
    neck: {type: fpn, out_channels, num_outs, extra_convs_on} or {type: ssd, ...} (gfldet.models.necks)
    head: {type: gfl, ..., assigner: {type: atss, ...}, loss_cls: {type: qfl, ...}, loss_bbox: ..., loss_dfl: ...}
    test_cfg: {score_thr, nms_pre, nms_iou, max_per_img, min_bbox_size}

Wiring happens here: the neck gets the backbone's channels and strides, the head the neck's channels and strides
and ``num_classes`` (a head with ``per_level_channels`` -- SSD -- gets the list of every level's channels);
head sub-sections whose value has a ``type`` are built first (``assigner`` from ASSIGNERS,
``loss_*`` from LOSSES) and passed to the head as objects.
"""
from __future__ import annotations

import copy
from typing import Mapping

from gfldet.assigners import ATSSAssigner
from gfldet.assigners.fcos import FCOSAssigner
from gfldet.assigners.fovea import FoveaAssigner
from gfldet.assigners.max_iou import MaxIoUAssigner
from gfldet.config import Config, ConfigError, build_from_cfg, check_keys
from gfldet.losses import DistributionFocalLoss, FocalLoss, GIoULoss, QualityFocalLoss
from gfldet.losses.hard_negative_ce import HardNegativeCrossEntropyLoss
from gfldet.losses.l1 import L1Loss
from gfldet.losses.smooth_l1 import SmoothL1Loss
from gfldet.losses.soft_focal import SoftFocalLoss
from gfldet.models.backbones import ResNet, TimmBackbone
from gfldet.models.detector import Detector
from gfldet.models.heads.atss_head import ATSSHead
from gfldet.models.heads.fcos_head import FCOSHead
from gfldet.models.heads.fovea_head import FoveaHead
from gfldet.models.heads.gfl_head import GFLHead
from gfldet.models.heads.retina_head import RetinaHead
from gfldet.models.heads.ssd_head import SSDHead
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.necks import FPN, SSDNeck
from gfldet.models.vgg import SSDVGG

__all__ = ["build_detector", "Detector", "BACKBONES", "NECKS", "HEADS", "ASSIGNERS", "LOSSES"]

BACKBONES = {"resnet": ResNet, "timm": TimmBackbone, "ssd_vgg": SSDVGG}
NECKS = {"fpn": FPN, "ssd": SSDNeck}
HEADS = {"gfl": GFLHead, "atss": ATSSHead, "fcos": FCOSHead, "retina": RetinaHead, "fovea": FoveaHead,
         "ssd": SSDHead}
ASSIGNERS = {"atss": ATSSAssigner, "fcos": FCOSAssigner, "max_iou": MaxIoUAssigner, "fovea": FoveaAssigner}
LOSSES = {"qfl": QualityFocalLoss, "dfl": DistributionFocalLoss, "giou": GIoULoss, "focal": FocalLoss,
          "soft_focal": SoftFocalLoss, "l1": L1Loss, "smooth_l1": SmoothL1Loss,
          "hard_negative_ce": HardNegativeCrossEntropyLoss}
MODEL_KEYS = ("num_classes", "backbone", "neck", "head", "test_cfg")


def _section(cfg: Config, key: str) -> Config:
    if not isinstance(cfg.get(key), Mapping):
        raise ConfigError(f"{cfg.where()}: '{cfg.dotted(key)}' must be a mapping (section), got {cfg.get(key)!r}")
    return cfg[key]


def _component_registry(key: str) -> Mapping | None:
    if key == "assigner":
        return ASSIGNERS
    if key.startswith("loss_"):
        return LOSSES
    return None


def _check_level_ranges(component, *, num_levels: int, where: str) -> None:
    """An assigner with per-level ranges (FCOS, FoveaBox) needs one per pyramid level: say so at build time."""
    ranges = getattr(component, "level_ranges", None)
    if ranges is not None and len(ranges) != num_levels:
        raise ConfigError(f"{where}: {len(ranges)} per-level ranges for {num_levels} pyramid levels "
                          f"(model.neck.num_outs); give one (low, high) pair per level")


def build_test_cfg(cfg: Config) -> PostProcessConfig:
    """``model.test_cfg`` -> PostProcessConfig (unknown or missing keys -> ConfigError with file and line)."""
    typed = copy.deepcopy(cfg)
    typed["type"] = "test_cfg"
    return build_from_cfg(typed, {"test_cfg": PostProcessConfig}, where=cfg.dotted() or "test_cfg")


def build_detector(cfg: Mapping) -> Detector:
    """Build the detector described by the ``model`` config section (see the module docstring)."""
    cfg = cfg if isinstance(cfg, Config) else Config(cfg, path="model")
    check_keys(cfg, MODEL_KEYS, where="model")
    for key in MODEL_KEYS:
        if key not in cfg:
            raise ConfigError(f"{cfg.where()}: model section is missing '{cfg.dotted(key)}'")
    num_classes = cfg["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"{cfg.where('num_classes')}: num_classes must be a positive integer, got {num_classes!r}")
    backbone = build_from_cfg(_section(cfg, "backbone"), BACKBONES)
    neck = build_from_cfg(_section(cfg, "neck"), NECKS, in_channels=backbone.out_channels,
                          in_strides=backbone.strides)
    head_cfg = copy.deepcopy(_section(cfg, "head"))
    per_level_channels = getattr(HEADS.get(head_cfg.get("type")), "per_level_channels", False)
    if not per_level_channels and len(set(neck.out_channels)) != 1:
        raise ConfigError(f"{cfg.where('neck')}: the head needs equal channels on every level, "
                          f"got {neck.out_channels}")
    components = {}
    for key in list(head_cfg):
        registry = _component_registry(key)
        if registry is not None:
            components[key] = build_from_cfg(_section(head_cfg, key), registry)
            _check_level_ranges(components[key], num_levels=len(neck.strides), where=head_cfg.where(key))
            del head_cfg[key]
    in_channels = list(neck.out_channels) if per_level_channels else neck.out_channels[0]
    head = build_from_cfg(head_cfg, HEADS, num_classes=num_classes, in_channels=in_channels,
                          strides=neck.strides, test_cfg=build_test_cfg(_section(cfg, "test_cfg")), **components)
    return Detector(backbone=backbone, neck=neck, head=head)
