"""Interoperability with mmdetection checkpoints.

``convert_mmdet_state_dict`` renames the parameters of mmdetection's GFL detectors (2.x and 3.x checkpoints of
ResNet / ResNeXt (+DCN) - FPN - GFLHead, e.g. ``gfl_r50_fpn_1x_coco_20200629_121244-25944287.pth``) and SSD detectors
(SSDVGG - SSDNeck - SSDHead, e.g. ``ssd512_coco_20210803_022849-0a47a1ca.pth``) to gfldet's names, so that
``model.load_state_dict(converted, strict=True)`` succeeds. Backbone names are shared (torchvision's; SSDVGG's
``features.<index>``); mmcv's ``ConvModule`` wrapper level disappears (``.conv.`` in the FPN and the SSD extra layers,
``.gn.`` -> ``.norm.`` in the GFL head towers), and so does the one-conv ``nn.Sequential`` of SSDHead's per-level
predictors (``bbox_head.cls_convs.<i>.0.*`` -> ``head.cls_convs.<i>.*``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from gfldet.errors import GfldetError

__all__ = ["CheckpointError", "convert_mmdet_state_dict", "convert_mmdet_checkpoint"]


class CheckpointError(GfldetError, ValueError):
    """A checkpoint that cannot be read or converted."""


# (mmdetection key pattern, gfldet replacement); the first full match wins
_MMDET_RULES = [
    (r"backbone\.(.+)", r"backbone.\1"),
    (r"neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)", r"neck.\1.\2.\3"),
    (r"neck\.extra_layers\.(\d+)\.(\d+)\.conv\.(weight|bias)", r"neck.extra_layers.\1.\2.\3"),  # SSD
    (r"neck\.l2_norm\.weight", r"neck.l2_norm.weight"),  # SSD
    (r"bbox_head\.(cls_convs|reg_convs)\.(\d+)\.conv\.(weight|bias)", r"head.\1.\2.conv.\3"),
    (r"bbox_head\.(cls_convs|reg_convs)\.(\d+)\.gn\.(weight|bias)", r"head.\1.\2.norm.\3"),
    (r"bbox_head\.(cls_convs|reg_convs)\.(\d+)\.0\.(weight|bias)", r"head.\1.\2.\3"),  # SSD predictors
    (r"bbox_head\.gfl_cls\.(weight|bias)", r"head.cls_pred.\1"),
    (r"bbox_head\.gfl_reg\.(weight|bias)", r"head.reg_pred.\1"),
    (r"bbox_head\.scales\.(\d+)\.scale", r"head.scales.\1"),
]
_INTEGRAL_PROJECT = "bbox_head.integral.project"  # a constant buffer {0..reg_max}: checked, then dropped


def _unwrap(checkpoint: Mapping) -> Mapping[str, torch.Tensor]:
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"expected a state dict or a checkpoint with 'state_dict', got {type(checkpoint)}")
    return state


def convert_mmdet_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """mmdetection GFL or SSD state dict (or full checkpoint with 'state_dict' / 'meta') -> gfldet state dict.

    Raises CheckpointError naming the keys that are not part of a GFL ResNet-FPN or SSD VGG16 model, and when the
    integral projection is not {0, 1, ..., reg_max} (a model gfldet would decode differently).
    """
    state = _unwrap(checkpoint)
    converted, unknown = {}, []
    for key, value in state.items():
        if key == _INTEGRAL_PROJECT:
            expected = torch.arange(value.numel(), dtype=value.dtype)
            if not torch.equal(value.cpu(), expected):
                raise CheckpointError(f"{key} is {value.tolist()}, expected 0..{value.numel() - 1} (bin width 1)")
            continue
        for pattern, replacement in _MMDET_RULES:
            if re.fullmatch(pattern, key):
                converted[re.sub(pattern, replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{len(unknown)} key(s) are not part of an mmdetection GFL (ResNet-FPN) or SSD "
                              f"(VGG16) model, e.g. {unknown[:5]}")
    return converted


def convert_mmdet_checkpoint(src: str | Path, dst: str | Path) -> dict[str, torch.Tensor]:
    """Read an mmdetection .pth file, convert it and save ``{'model': state_dict, 'meta': {...}}`` to ``dst``."""
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"checkpoint '{src}' does not exist")
    try:
        # mmdetection checkpoints pickle their 'meta' (config text, class names, versions): not weights_only
        checkpoint = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as err:  # corrupt / non-torch file: say which file
        raise CheckpointError(f"cannot read '{src}' as a PyTorch checkpoint: {err}") from None
    state = convert_mmdet_state_dict(checkpoint)
    meta = checkpoint.get("meta", {}) if isinstance(checkpoint, Mapping) else {}
    classes = (meta.get("dataset_meta") or {}).get("classes") or meta.get("CLASSES")
    out_meta = {"converted_from": str(src), "source": "mmdetection"}
    if classes:
        out_meta["class_names"] = list(classes)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "meta": out_meta}, dst)
    return state
