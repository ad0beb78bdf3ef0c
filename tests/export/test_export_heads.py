"""Export of the heads other than GFL: RetinaNet (9 anchors per location, anchor deltas), ATSS with a quality
branch (score = sigmoid(cls) x sigmoid(quality)) and SSD (4 or 6 anchors per location, softmax scores). The decoded
view equals the head's own scores and decoder, and the traced / ONNX detections view reproduces
``Detector.predict``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder

from gfldet.assigners import ATSSAssigner
from gfldet.assigners.max_iou import MaxIoUAssigner
from gfldet.export import DecodedOutputs, export_onnx, export_torchscript
from gfldet.losses import FocalLoss, GIoULoss
from gfldet.losses.hard_negative_ce import HardNegativeCrossEntropyLoss
from gfldet.losses.l1 import L1Loss
from gfldet.losses.smooth_l1 import SmoothL1Loss
from gfldet.models.detector import Detector
from gfldet.models.heads.atss_head import ATSSHead
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.retina_head import RetinaHead
from gfldet.models.heads.ssd_head import SSDHead
from tests.export.tiny_models import TINY_MODEL, tiny_detector

TEST_CFG = PostProcessConfig(score_thr=0.05, nms_pre=1000, nms_iou=0.6, max_per_img=100, min_bbox_size=0)
TOWER = dict(num_classes=TINY_MODEL["num_classes"], in_channels=32, strides=(8, 16, 32, 64, 128), feat_channels=32,
             stacked_convs=1, norm_groups=8, init_std=0.01, prior_prob=0.01, pad_size_divisor=32, test_cfg=TEST_CFG)
FOCAL = FocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0)


def retina_head() -> RetinaHead:
    return RetinaHead(**TOWER, octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                      quality={"type": "none"}, delta_weights=[1.0, 1.0, 1.0, 1.0], delta_clip=math.log(1000 / 16),
                      assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0), loss_cls=FOCAL,
                      loss_bbox=L1Loss(loss_weight=1.0))


def atss_quality_head() -> ATSSHead:
    box = {"type": "general", "reg_max": 16, "bin_width": 1.0, "dfl_weight": 0.25, "dfl_target_eps": 0.1}
    return ATSSHead(**TOWER, octave_base_scale=8, quality={"type": "iou_branch", "loss_weight": 1.0}, box_repr=box,
                    bbox_weighting="cls_score", assigner=ATSSAssigner(topk=9), loss_cls=FOCAL,
                    loss_bbox=GIoULoss(loss_weight=2.0))


def ssd_head() -> SSDHead:
    return SSDHead(num_classes=TOWER["num_classes"], in_channels=[32] * 5, strides=TOWER["strides"],
                   min_sizes=[16, 32, 64, 128, 256], max_sizes=[32, 64, 128, 256, 512],
                   ratios=[[2], [2, 3], [2, 3], [2], [2]], quality={"type": "none"}, prior_prob=0.01,
                   delta_weights=[10, 10, 5, 5], delta_clip=math.log(1000 / 16), pad_size_divisor=32,
                   assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0),
                   loss_cls=HardNegativeCrossEntropyLoss(neg_pos_ratio=3, loss_weight=1.0),
                   loss_bbox=SmoothL1Loss(beta=1.0, loss_weight=1.0), test_cfg=TEST_CFG)


HEADS = {"retina": retina_head, "atss_iou_branch": atss_quality_head, "ssd": ssd_head}


@pytest.fixture(scope="module", params=list(HEADS))
def model(request) -> Detector:
    """The tiny detector's backbone and neck with the head under test; prediction convs spread so that scores cross
    the threshold and the quality factor differs from prior to prior."""
    tiny = tiny_detector()
    torch.manual_seed(3)
    head = HEADS[request.param]()
    for conv in getattr(head, "cls_convs", []) if isinstance(head, SSDHead) else [head.cls_pred]:
        torch.nn.init.normal_(conv.weight, std=0.05)
        torch.nn.init.constant_(conv.bias, -1.0)
    for conv in head.reg_convs if isinstance(head, SSDHead) else [head.reg_pred]:
        torch.nn.init.normal_(conv.weight, std=0.02)
    if getattr(head, "quality_pred", None) is not None:
        torch.nn.init.normal_(head.quality_pred.weight, std=0.1)
    return Detector(backbone=tiny.backbone, neck=tiny.neck, head=head).eval()


def test_decoded_view_uses_the_heads_scores_and_decoder(model):
    head = model.head
    images = torch.randn(2, 3, 128, 160)
    scores, boxes = DecodedOutputs(model)(images)
    cls_scores, bbox_preds = model.raw_outputs(images)
    priors = head.priors_for(cls_scores)
    flat = lambda maps, k: torch.cat([m.permute(0, 2, 3, 1).reshape(2, -1, k) for m in maps], 1)  # noqa: E731
    assert scores.shape == (2, priors.centers_px.shape[0], head.num_classes) and boxes.shape[:2] == scores.shape[:2]
    if isinstance(head, SSDHead):  # independent: a softmax without the background, torchvision's decoder (10, 10, 5, 5)
        want_scores = flat(cls_scores, head.num_classes + 1).softmax(dim=-1)[..., :-1]
        want_boxes = torch.stack([BoxCoder((10.0, 10.0, 5.0, 5.0), math.log(1000 / 16)).decode_single(
            r, priors.anchors_px) for r in flat(bbox_preds, 4)])
        torch.testing.assert_close(scores, want_scores)
        torch.testing.assert_close(boxes, want_boxes)
        return
    logits, reg = flat(cls_scores, head.num_classes), flat(bbox_preds, bbox_preds[0].shape[1] // head.num_anchors)
    if isinstance(head, RetinaHead):  # independent: torchvision's decoder on the head's anchors
        want_scores = logits.sigmoid()
        want_boxes = torch.stack([BoxCoder((1.0, 1.0, 1.0, 1.0), math.log(1000 / 16)).decode_single(
            r, priors.anchors_px) for r in reg])
    else:  # the quality branch multiplies the class probability, as in predict
        want_scores = logits.sigmoid() * reg[..., -1:].sigmoid()
        want_boxes = torch.stack([head.decode_boxes(r, priors, torch.arange(len(r))) for r in reg])
    torch.testing.assert_close(scores, want_scores)
    torch.testing.assert_close(boxes, want_boxes)


def _assert_same_detections(got, want: dict) -> None:
    boxes, scores, labels = _canonical(*(torch.as_tensor(g) for g in got))
    want_boxes, want_scores, want_labels = _canonical(want["boxes"], want["scores"], want["labels"])
    assert len(scores) == len(want_scores) > 0
    torch.testing.assert_close(labels, want_labels)
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(boxes, want_boxes, rtol=1e-5, atol=1e-2)


def _canonical(boxes, scores, labels):
    """Detections by decreasing score, equal scores by x1 then y1: the order of exact ties (SSD's uniform padded
    cells give many) is NMS's and top-k's business, not the export's."""
    order = torch.arange(len(scores))
    for key in (boxes[:, 1], boxes[:, 0], -scores):
        order = order[key[order].argsort(stable=True)]
    return boxes[order], scores[order], labels[order]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_traced_detections_match_predict_at_two_sizes(model, tmp_path):
    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "det.pt", view="detections",
                                                   input_size=(128, 160))))
    torch.manual_seed(4)
    for images in (torch.randn(1, 3, 128, 160), torch.randn(1, 3, 192, 224)):
        want = model.predict(images, [tuple(images.shape[-2:])], [(1.0, 1.0)])[0]
        with torch.no_grad():
            _assert_same_detections(traced(images), want)


def test_onnx_detections_match_predict(model, tmp_path):
    import onnxruntime as ort

    path = export_onnx(model, tmp_path / "det.onnx", view="detections", input_size=(128, 160), dynamic=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = torch.randn(1, 3, 160, 192, generator=torch.Generator().manual_seed(5))
    want = model.predict(images, [(160, 192)], [(1.0, 1.0)])[0]
    _assert_same_detections([np.asarray(g) for g in sess.run(None, {"images": images.numpy()})], want)

