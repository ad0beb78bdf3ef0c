"""mmdetection checkpoint conversion (no mmdetection needed; tests/parity/ checks real mmdetection models)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gfldet.checkpoint import CheckpointError, convert_mmdet_checkpoint, convert_mmdet_state_dict
from gfldet.cli import main
from gfldet.config import load_config
from gfldet.models import build_detector

CONFIG = Path(__file__).parents[1] / "configs/_base_/models/gfl_r50_fpn.yaml"

# mmdetection name -> gfldet name, written out by hand from mmdetection's GFL R-50 checkpoint keys
HAND_MAPPED = {
    "backbone.conv1.weight": "backbone.conv1.weight",
    "backbone.bn1.num_batches_tracked": "backbone.bn1.num_batches_tracked",
    "backbone.layer1.0.downsample.1.running_var": "backbone.layer1.0.downsample.1.running_var",
    "backbone.layer3.5.conv2.conv_offset.weight": "backbone.layer3.5.conv2.conv_offset.weight",
    "neck.lateral_convs.0.conv.weight": "neck.lateral_convs.0.weight",
    "neck.lateral_convs.2.conv.bias": "neck.lateral_convs.2.bias",
    "neck.fpn_convs.3.conv.weight": "neck.fpn_convs.3.weight",
    "neck.fpn_convs.4.conv.bias": "neck.fpn_convs.4.bias",
    "bbox_head.cls_convs.0.conv.weight": "head.cls_convs.0.conv.weight",
    "bbox_head.cls_convs.3.gn.weight": "head.cls_convs.3.norm.weight",
    "bbox_head.reg_convs.1.gn.bias": "head.reg_convs.1.norm.bias",
    "bbox_head.gfl_cls.weight": "head.cls_pred.weight",
    "bbox_head.gfl_cls.bias": "head.cls_pred.bias",
    "bbox_head.gfl_reg.bias": "head.reg_pred.bias",
    "bbox_head.scales.0.scale": "head.scales.0",
    "bbox_head.scales.4.scale": "head.scales.4",
}


def test_hand_written_key_mapping():
    state = {key: torch.tensor(float(i)) for i, key in enumerate(HAND_MAPPED)}
    state["bbox_head.integral.project"] = torch.linspace(0, 16, 17)
    converted = convert_mmdet_state_dict({"state_dict": state, "meta": {"epoch": 12}})
    assert converted.keys() == set(HAND_MAPPED.values())
    for i, (src, dst) in enumerate(HAND_MAPPED.items()):
        assert converted[dst].item() == i, src


def test_unknown_keys_and_odd_integral_are_errors():
    with pytest.raises(CheckpointError, match="bbox_head.atss_centerness.weight"):
        convert_mmdet_state_dict({"bbox_head.atss_centerness.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="integral.project"):
        convert_mmdet_state_dict({"bbox_head.integral.project": torch.linspace(0, 8, 17)})
    with pytest.raises(CheckpointError, match="state dict"):
        convert_mmdet_state_dict([1, 2])


def _as_mmdet(state: dict) -> dict:
    """Our state dict renamed the way mmdetection names the same parameters (inverse of the converter)."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("head.", "bbox_head.", 1) if key.startswith("head.") else key
        for part in ("lateral_convs", "fpn_convs"):
            if key.startswith(f"neck.{part}."):
                prefix, leaf = key.rsplit(".", 1)
                key = f"{prefix}.conv.{leaf}"
        key = key.replace(".norm.", ".gn.").replace("cls_pred", "gfl_cls").replace("reg_pred", "gfl_reg")
        if key.startswith("bbox_head.scales."):
            key += ".scale"
        renamed[key] = value
    renamed["bbox_head.integral.project"] = torch.linspace(0, 16, 17)
    return renamed


def _small_model():
    overrides = ["model.backbone.depth=18", "model.backbone.pretrained=false", "model.num_classes=3",
                 "model.neck.out_channels=32", "model.head.feat_channels=32", "model.head.stacked_convs=1"]
    return build_detector(load_config(CONFIG, overrides).model)


def test_every_parameter_has_an_mmdetection_name_and_loads_strictly():
    source = _small_model()
    target = _small_model()
    target.load_state_dict(convert_mmdet_state_dict(_as_mmdet(source.state_dict())), strict=True)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_convert_command_writes_a_gfldet_checkpoint(tmp_path, capsys):
    src, dst = tmp_path / "gfl_mmdet.pth", tmp_path / "out" / "gfl.pth"
    state = _as_mmdet(_small_model().state_dict())
    torch.save({"state_dict": state, "meta": {"dataset_meta": {"classes": ("a", "b", "c")}}}, src)
    assert main(["convert", "mmdet", str(src), str(dst)]) == 0
    saved = torch.load(dst, weights_only=True)
    assert saved["meta"]["class_names"] == ["a", "b", "c"]
    _small_model().load_state_dict(saved["model"], strict=True)
    assert "converted" in capsys.readouterr().out
    assert main(["convert", "mmdet", str(tmp_path / "missing.pth"), str(dst)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_convert_function_rejects_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        convert_mmdet_checkpoint(junk, tmp_path / "x.pth")
