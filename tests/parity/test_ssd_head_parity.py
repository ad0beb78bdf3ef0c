"""gfldet's SSD heads (configs/ssd/ssd{512,300}_coco.yaml) agree with mmdetection 3.3's SSD512 / SSD300 ``SSDHead``:
anchors, raw outputs, the loss (max-IoU assignment, hard negative mining, smooth L1) and the detections, on the same
weights and per-level features. Skipped when mmdetection is not installed (scripts/install_parity_deps.sh)."""
from __future__ import annotations

import copy
import importlib
import logging
import os
import types

import pytest
import torch

from gfldet.checkpoint import convert_mmdet_state_dict
from gfldet.config import apply_overrides, load_config
from gfldet.models import build_detector
from tests.mmdet_compat import import_mmdet, torchvision_nms

mmdet = import_mmdet()
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MMDET_CONFIGS = os.path.join(os.path.dirname(mmdet.__file__), ".mim/configs/ssd")
NUM_CLASSES = 3
# input size -> feature-map sizes and channels of its levels, number of anchors
VARIANTS = {512: ([64, 32, 16, 8, 4, 2, 1], [512, 1024, 512, 256, 256, 256, 256], 24564),
            300: ([38, 19, 10, 5, 3, 1], [512, 1024, 512, 256, 256, 256], 8732)}


@pytest.fixture(scope="module", params=list(VARIANTS), ids=lambda size: f"ssd{size}")
def heads(request):
    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    size = request.param
    cfg = Config.fromfile(os.path.join(MMDET_CONFIGS, f"ssd{size}_coco.py")).model
    head_cfg = copy.deepcopy(cfg.bbox_head)
    head_cfg.update(num_classes=NUM_CLASSES, train_cfg=cfg.train_cfg, test_cfg=cfg.test_cfg)
    torch.manual_seed(0)
    theirs = MODELS.build(head_cfg)
    theirs.init_weights()
    with torch.no_grad():  # spread the scores: random init leaves them near uniform
        for param in theirs.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    ours_cfg = apply_overrides(load_config(os.path.join(ROOT, f"configs/ssd/ssd{size}_coco.yaml")),
                               ["model.backbone.pretrained=false", f"model.num_classes={NUM_CLASSES}"])
    ours = build_detector(ours_cfg.model).head
    state = convert_mmdet_state_dict({f"bbox_head.{k}": v for k, v in theirs.state_dict().items()})
    ours.load_state_dict({k[len("head."):]: v for k, v in state.items()}, strict=True)
    return theirs, ours, size


def _features(size: int, batch: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    sizes, channels, _ = VARIANTS[size]
    return [torch.randn(batch, c, s, s, generator=g) for c, s in zip(channels, sizes)]


def _gts(size: int):
    """GTs of two images, given on a 512x512 image and scaled to ``size``."""
    boxes = [torch.tensor([[10.3, 12.6, 80.2, 90.9], [0.0, 0.0, 512.0, 512.0], [300.5, 100.2, 309.0, 131.9],
                           [160.7, 140.1, 390.4, 512.0]]),
             torch.tensor([[0.0, 30.3, 41.1, 121.0], [220.2, 20.9, 277.0, 460.6]])]
    labels = [torch.tensor([0, 2, 1, 1]), torch.tensor([2, 0])]
    return [b * (size / 512) for b in boxes], labels


def _metas(size: int, batch: int = 2) -> list[dict]:
    return [{"img_shape": (size, size), "pad_shape": (size, size), "scale_factor": (1.0, 1.0)}] * batch


def test_anchors_equal_mmdetection(heads):
    theirs, ours, size = heads
    feats = _features(size, 1)
    expected = torch.cat(theirs.prior_generator.grid_priors([f.shape[-2:] for f in feats], device="cpu"))
    priors = ours.priors_for(ours(feats)[0])
    assert priors.anchors_px.shape == (VARIANTS[size][2], 4) == expected.shape
    torch.testing.assert_close(priors.anchors_px, expected, rtol=0, atol=0)


def test_outputs_and_loss_equal_mmdetection(heads):
    theirs, ours, size = heads
    feats = _features(size)
    their_cls, their_reg = theirs(feats)
    our_cls, our_reg = ours(feats)
    for a, b in zip(their_cls + their_reg, our_cls + our_reg):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    boxes, labels = _gts(size)
    instances = [InstanceData(bboxes=b, labels=lab) for b, lab in zip(boxes, labels)]
    expected = theirs.loss_by_feat(their_cls, their_reg, instances, _metas(size))
    got = ours.loss(our_cls, our_reg, boxes, labels, [(size, size)] * 2)
    for key in ("loss_cls", "loss_bbox"):
        torch.testing.assert_close(got[key], sum(expected[key]).reshape(()), rtol=1e-5, atol=0)
    assert got["loss_cls"] > 0 and got["loss_bbox"] > 0


def test_detections_equal_mmdetection(heads, monkeypatch):
    monkeypatch.setattr(importlib.import_module("mmcv.ops.nms"), "nms", torchvision_nms)
    theirs, ours, size = heads
    # mmdetection 3.3's base predict path reads ``loss_cls.custom_cls_channels``, which SSDHead never defines
    monkeypatch.setattr(theirs, "loss_cls", types.SimpleNamespace(), raising=False)
    feats = _features(size)
    with torch.no_grad():
        their_cls, their_reg = theirs(feats)
        expected = theirs.predict_by_feat(their_cls, their_reg, batch_img_metas=_metas(size), rescale=True)
        got = ours.predict(*ours(feats), [(size, size)] * 2, [(1.0, 1.0)] * 2)
    for theirs_i, ours_i in zip(expected, got):
        assert len(ours_i["scores"]) == len(theirs_i.scores) > 50
        theirs_i = _canonical(theirs_i.scores, theirs_i.bboxes, theirs_i.labels)
        ours_i = _canonical(ours_i["scores"], ours_i["boxes"], ours_i["labels"])
        torch.testing.assert_close(ours_i[0], theirs_i[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours_i[1], theirs_i[1], rtol=1e-5, atol=1e-4)
        assert torch.equal(ours_i[2], theirs_i[2])


def _canonical(scores, boxes, labels):
    """Detections sorted by decreasing score, exact ties by x1 (the order of equal scores is NMS's business)."""
    order = boxes[:, 0].argsort(stable=True)
    order = order[scores[order].argsort(descending=True, stable=True)]
    return scores[order], boxes[order], labels[order]
