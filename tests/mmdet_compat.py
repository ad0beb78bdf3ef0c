"""Import mmdetection 3.3 on top of ``mmcv-lite`` for parity tests.

``mmcv-lite`` ships no compiled ops, and ``mmcv.ops`` (imported by mmdetection at module level) asserts that
every kernel exists in ``mmcv._ext``. A stub ``mmcv._ext`` whose attributes are placeholders lets the pure
PyTorch parts (assigners, losses, dense heads) import; calling a placeholder raises.

Usage in a test module::

    from tests.mmdet_compat import import_mmdet
    mmdet = import_mmdet()            # pytest.skip(...) when mmdetection is not installed
    from mmdet.models.task_modules.assigners import ATSSAssigner
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

import pytest
import torch

_INSTALL_HINT = "bash scripts/install_parity_deps.sh (mmengine, mmcv-lite 2.1.0, mmdet 3.3.0 and its runtime deps)"


class _MissingKernels(types.ModuleType):
    """Stand-in for the compiled ``mmcv._ext``: any attribute is a function that raises when called."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name} is a stub: mmcv-lite has no compiled ops")

        return missing


def install_mmcv_ext_stub() -> None:
    """Register the stub ``mmcv._ext`` unless a real one is importable."""
    if "mmcv._ext" in sys.modules:
        return
    try:
        importlib.import_module("mmcv._ext")
    except ImportError:
        stub = _MissingKernels("mmcv._ext")
        stub.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None)
        sys.modules["mmcv._ext"] = stub


def torchvision_nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
    """Stand-in for mmcv's compiled ``mmcv.ops.nms.nms`` (mmcv-lite has none): same contract, torchvision's kernel.
    Install with ``monkeypatch.setattr(importlib.import_module("mmcv.ops.nms"), "nms", torchvision_nms)``."""
    assert offset == 0 and score_threshold == 0 and max_num == -1
    keep = torch.ops.torchvision.nms(boxes, scores, float(iou_threshold))
    return torch.cat([boxes[keep], scores[keep, None]], dim=1), keep


def mmdet_gfl_config(*, depth: int = 50, num_classes: int = 80, channels: int = 256, stacked_convs: int = 4,
                     pad_size_divisor: int = 32) -> dict:
    """mmdetection 3.3's GFL model config (``configs/gfl/gfl_r50_fpn_1x_coco.py`` at the defaults; no pretrained
    init): ResNet-``depth`` with frozen_stages=1 and norm_eval, FPN P3-P7 from the outputs with ``channels``,
    GFLHead with ``stacked_convs`` GroupNorm convs per tower, reg_max 16, ATSS top-9, QFL / DFL / GIoU."""
    in_channels = [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]
    return dict(
        type="GFL",
        data_preprocessor=dict(type="DetDataPreprocessor", pad_size_divisor=pad_size_divisor),
        backbone=dict(type="ResNet", depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                      norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch"),
        neck=dict(type="FPN", in_channels=in_channels, out_channels=channels, start_level=1,
                  add_extra_convs="on_output", num_outs=5),
        bbox_head=dict(
            type="GFLHead", num_classes=num_classes, in_channels=channels, stacked_convs=stacked_convs,
            feat_channels=channels,
            anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
                                  strides=[8, 16, 32, 64, 128]),
            loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
            loss_dfl=dict(type="DistributionFocalLoss", loss_weight=0.25), reg_max=16,
            loss_bbox=dict(type="GIoULoss", loss_weight=2.0)),
        train_cfg=dict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                      max_per_img=100),
    )


def import_mmdet() -> types.ModuleType:
    """Import mmdetection with the stub in place; skip the calling test (module) when it is not installed."""
    pytest.importorskip("mmcv", reason=f"mmdetection parity needs: {_INSTALL_HINT}")
    install_mmcv_ext_stub()
    mmdet = pytest.importorskip("mmdet", reason=f"mmdetection parity needs: {_INSTALL_HINT}")
    importlib.import_module("mmdet.models")  # registers modules; fails loudly if the stub is not enough
    return mmdet
