"""gfldet's SSDVGG + SSDNeck agree with mmdetection 3.3's SSD512 backbone and neck on the same weights and inputs.

mmdetection's SSD512 detector is built from its own ``configs/ssd/ssd512_coco.py`` (without the vgg16_caffe
``Pretrained`` init, so with its random init), its whole state dict converted with ``convert_mmdet_state_dict`` (every
key of an SSD512 checkpoint must convert), and the ``backbone.`` / ``neck.`` parts loaded into ours with strict=True.
Skipped when mmdetection is not installed (scripts/install_parity_deps.sh installs it).
"""
from __future__ import annotations

import logging
import os
import re

import pytest
import torch

from gfldet.checkpoint import convert_mmdet_state_dict
from gfldet.models.necks import SSDNeck
from gfldet.models.vgg import SSDVGG
from tests.mmdet_compat import import_mmdet

mmdet = import_mmdet()
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

SSD512_CONFIG = os.path.join(os.path.dirname(mmdet.__file__), ".mim/configs/ssd/ssd512_coco.py")
SSD512_STRIDES = [8, 16, 32, 64, 128, 256, 512]
RTOL = 1e-5


def _ours(**pretrained) -> tuple[SSDVGG, SSDNeck]:
    neck_cfg = Config.fromfile(SSD512_CONFIG).model.neck
    backbone = SSDVGG(ceil_mode=True, **pretrained)
    neck = SSDNeck(in_channels=backbone.out_channels, in_strides=backbone.strides,
                   out_channels=list(neck_cfg.out_channels), level_strides=list(neck_cfg.level_strides),
                   level_paddings=list(neck_cfg.level_paddings), l2_norm_scale=float(neck_cfg.l2_norm_scale),
                   last_kernel_size=neck_cfg.last_kernel_size, strides=SSD512_STRIDES)
    return backbone, neck


def _our_name(key: str) -> str:
    """The renaming rule, written independently of gfldet.checkpoint: mmcv's ``.conv.`` wrapper level and
    SSDHead's one-conv ``nn.Sequential`` level disappear, ``bbox_head`` -> ``head``."""
    if key.startswith("bbox_head."):
        return re.sub(r"^bbox_head\.(cls_convs|reg_convs)\.(\d+)\.0\.", r"head.\1.\2.", key)
    return key.replace(".conv.", ".")


def _split(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def models():
    """(mmdetection's SSD512 detector, its init statistics, our backbone, our neck), weights perturbed and shared."""
    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.ERROR)  # no per-parameter init report
    cfg = Config.fromfile(SSD512_CONFIG).model
    assert (cfg.backbone.depth, cfg.backbone.with_last_pool, cfg.backbone.ceil_mode) == (16, False, True)
    assert tuple(cfg.backbone.out_feature_indices) == (22, 34) and cfg.neck.last_kernel_size == 4
    cfg.backbone.init_cfg = None  # random init: mmdetection's Kaiming on the convs
    torch.manual_seed(0)
    theirs = MODELS.build(cfg)
    theirs.init_weights()
    init_stats = {k: (v.mean().item(), v.std().item(), v.abs().max().item()) for k, v in theirs.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # no parameter keeps a trivial init (zero biases, constant L2Norm scale)
        for name, tensor in theirs.state_dict().items():
            noise = torch.randn(tensor.shape, generator=g)
            tensor.add_(noise * (0.1 * tensor.std() if name.endswith("weight") and tensor.dim() > 1 else 0.1))
        theirs.neck.l2_norm.weight.add_(torch.randn(512, generator=g) * 3.0)
    converted = convert_mmdet_state_dict({"state_dict": theirs.state_dict(), "meta": {}})
    assert set(converted) == {_our_name(k) for k in theirs.state_dict()}
    assert {"head.cls_convs.6.weight", "head.reg_convs.0.bias", "neck.extra_layers.4.1.weight"} <= set(converted)
    backbone, neck = _ours()
    backbone.load_state_dict(_split(converted, "backbone."), strict=True)
    neck.load_state_dict(_split(converted, "neck."), strict=True)
    return theirs.eval(), init_stats, backbone.eval(), neck.eval()


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, what
    scale = theirs.abs().max().item()
    assert scale > 0, what
    diff = (ours - theirs).abs().max().item()
    assert diff <= RTOL * scale, f"{what}: max abs diff {diff} (max abs {scale})"


def test_ssd512_backbone_and_neck_outputs_match(models):
    theirs, _, backbone, neck = models
    images = torch.randn(2, 3, 512, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs.neck(theirs.backbone(images))
        outs = neck(backbone(images))
    assert len(outs) == len(expected) == 7
    assert [tuple(o.shape[-2:]) for o in outs] == [(s, s) for s in (64, 32, 16, 8, 4, 2, 1)]
    for level, (ours, ref) in enumerate(zip(outs, expected)):
        _assert_same(ours, ref, f"level {level}")


def test_backbone_ceil_mode_on_odd_sizes_matches(models):
    theirs, _, backbone, _ = models
    images = torch.randn(1, 3, 99, 77, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = theirs.backbone(images)
        outs = backbone(images)
    assert [tuple(o.shape[-2:]) for o in outs] == [(13, 10), (7, 5)]
    for level, (ours, ref) in enumerate(zip(outs, expected)):
        _assert_same(ours, ref, f"backbone output {level}")


def test_random_init_statistics_match_mmdetections(models):
    _, init_stats, _, _ = models
    torch.manual_seed(4)
    backbone, neck = _ours(pretrained=False)
    ours = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    ours.update({f"neck.{k}": v for k, v in neck.state_dict().items()})
    theirs = {k: v for k, v in init_stats.items() if k.startswith(("backbone.", "neck."))}
    theirs = {_our_name(k): v for k, v in theirs.items()}
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        mean, std, max_abs = theirs[key]
        if key.endswith("bias"):
            assert max_abs == 0 and torch.count_nonzero(value) == 0, key
        elif key == "neck.l2_norm.weight":
            assert (mean, std) == (20.0, 0.0) and torch.equal(value, torch.full_like(value, 20.0)), key
        else:  # Kaiming-normal (fan_out) backbone convs, Xavier-uniform neck convs: same spread and range
            assert abs(value.std().item() / std - 1) < 0.1, key
            assert abs(value.mean().item() - mean) < 0.1 * std, key
            assert abs(value.abs().max().item() / max_abs - 1) < 0.35, key
