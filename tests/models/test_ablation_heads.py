"""The ablation head family (VariantHead / ATSSHead): every option builds and trains a step, each option's loss
matches its formula, and the GFL combination equals GFLHead."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from gfldet.assigners import ATSSAssigner, pad_gt_boxes
from gfldet.box_coding import aligned_box_iou, distance2bbox
from gfldet.config import ConfigError
from gfldet.losses import DistributionFocalLoss, FocalLoss, GIoULoss, QualityFocalLoss
from gfldet.losses.soft_focal import SoftFocalLoss
from gfldet.models.heads.atss_head import ATSSHead
from gfldet.models.heads.box_repr import GeneralBox
from gfldet.models.heads.gfl_head import GFLHead
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.quality import QUALITY_OPTIONS, centerness_target

STRIDES = (8, 16, 32, 64, 128)
IMAGE_SIZES = [(128, 160), (96, 160)]
CHANNELS, CLASSES = 16, 3
TEST_CFG = PostProcessConfig(score_thr=0.05, nms_pre=1000, nms_iou=0.6, max_per_img=100, min_bbox_size=0)
TOWER = dict(num_classes=CLASSES, in_channels=CHANNELS, strides=STRIDES, feat_channels=CHANNELS, stacked_convs=1,
             norm_groups=4, init_std=0.01, prior_prob=0.01, octave_base_scale=8, pad_size_divisor=32,
             test_cfg=TEST_CFG)
CLS_LOSS = {"focal": FocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0),
            "soft_focal": SoftFocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0),
            "qfl": QualityFocalLoss(beta=2.0, loss_weight=1.0)}
BOX_REPRS = {"dirac": {"type": "dirac"},
             "gaussian": {"type": "gaussian", "loss_weight": 0.25, "var_eps": 1e-6},
             "general": {"type": "general", "reg_max": 16, "bin_width": 1.0, "dfl_weight": None,
                         "dfl_target_eps": 0.1},
             "general_dfl": {"type": "general", "reg_max": 16, "bin_width": 1.0, "dfl_weight": 0.25,
                             "dfl_target_eps": 0.1}}


def make_head(quality="joint_qfl", box="general_dfl", weighting="cls_score", section=None, **overrides):
    torch.manual_seed(0)
    option = QUALITY_OPTIONS.get(quality, QUALITY_OPTIONS["none"])  # unknown names: the head must reject them
    section = section or {"type": quality, **({"loss_weight": 1.0} if "branch" in quality else {})}
    args = dict(TOWER, quality=section, box_repr=BOX_REPRS[box], bbox_weighting=weighting,
                assigner=ATSSAssigner(topk=9), loss_cls=CLS_LOSS[option.cls_loss], loss_bbox=GIoULoss(loss_weight=2.0))
    args.update(overrides)
    return ATSSHead(**args)


def features(batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CHANNELS, math.ceil(128 / s), math.ceil(160 / s), generator=gen) for s in STRIDES]


def ground_truth():
    boxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0], [80.0, 20.0, 150.0, 60.0]]),
             torch.tensor([[30.0, 30.0, 60.0, 80.0]])]
    return boxes, [torch.tensor([0, 2]), torch.tensor([1])]


def perturb(head, scale=0.3):
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * scale)


@pytest.mark.parametrize("quality", list(QUALITY_OPTIONS))
def test_every_quality_option_trains_a_step(quality):
    weighting = "centerness" if "centerness" in quality else "cls_score"
    head = make_head(quality, box="dirac", weighting=weighting)
    boxes, labels = ground_truth()
    cls, reg = head(features())
    expected_channels = 5 if "branch" in quality else 4
    assert all(r.shape[1] == expected_channels for r in reg)
    losses = head.loss(cls, reg, boxes, labels, IMAGE_SIZES)
    keys = {"loss_cls", "loss_bbox"} | ({"loss_quality"} if "branch" in quality else set())
    assert set(losses) == keys
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert head.cls_pred.weight.grad.abs().sum() > 0 and head.reg_pred.weight.grad.abs().sum() > 0
    head.eval()
    detections = head.predict(cls, reg, IMAGE_SIZES, [(1.0, 1.0)] * 2)
    assert len(detections) == 2 and detections[0]["boxes"].shape[1] == 4


@pytest.mark.parametrize("box,extra", [("dirac", set()), ("gaussian", {"loss_gaussian"}), ("general", set()),
                                       ("general_dfl", {"loss_dfl"})])
def test_every_box_representation_trains_a_step(box, extra):
    head = make_head("centerness_branch", box=box, weighting="centerness")
    assert head.reg_pred.out_channels == {"dirac": 4, "gaussian": 8}.get(box, 68)
    boxes, labels = ground_truth()
    losses = head.loss(*head(features()), boxes, labels, IMAGE_SIZES)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_quality"} | extra
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and head.reg_pred.weight.grad.abs().sum() > 0


def ground_truth_one_empty_image():
    """Image 0 has two GTs, image 1 none: mmdetection 3.3 counts one positive for image 1 in the QFL normaliser."""
    boxes, labels = ground_truth()
    return [boxes[0], torch.zeros(0, 4)], [labels[0], torch.zeros(0, dtype=torch.long)]


@pytest.mark.parametrize("gt", [ground_truth, ground_truth_one_empty_image], ids=["both_images", "one_empty"])
def test_gfl_option_set_equals_gfl_head(gt):
    ours = make_head("joint_qfl", box="general_dfl", weighting="cls_score")
    perturb(ours)
    gfl = GFLHead(**TOWER, reg_max=16, dfl_target_eps=0.1, assigner=ATSSAssigner(topk=9),
                  loss_cls=QualityFocalLoss(beta=2.0, loss_weight=1.0), loss_bbox=GIoULoss(loss_weight=2.0),
                  loss_dfl=DistributionFocalLoss(loss_weight=0.25))
    gfl.load_state_dict(ours.state_dict())  # same parameter names: strict
    boxes, labels = gt()
    feats = features()
    ours_out, gfl_out = ours(feats), gfl(feats)
    ours_losses = ours.loss(*ours_out, boxes, labels, IMAGE_SIZES)
    gfl_losses = gfl.loss(*gfl_out, boxes, labels, IMAGE_SIZES)
    assert set(ours_losses) == set(gfl_losses) == {"loss_cls", "loss_bbox", "loss_dfl"}
    for key in gfl_losses:
        torch.testing.assert_close(ours_losses[key], gfl_losses[key], rtol=1e-6, atol=1e-7)
    sum(ours_losses.values()).backward()
    sum(gfl_losses.values()).backward()
    for (name, a), b in zip(ours.named_parameters(), gfl.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8, msg=name)
    ours.eval(), gfl.eval()
    a = ours.predict(*ours_out, IMAGE_SIZES, [(1.0, 1.0)] * 2)
    b = gfl.predict(*gfl_out, IMAGE_SIZES, [(1.0, 1.0)] * 2)
    for x, y in zip(a, b):
        torch.testing.assert_close(x["boxes"], y["boxes"])
        torch.testing.assert_close(x["scores"], y["scores"])


def test_centerness_target_formula():
    ltrb = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [0.0, 1.0, 2.0, 1.0]])
    expected = torch.tensor([math.sqrt(1 / 3 * 2 / 4), 1.0, 0.0])
    torch.testing.assert_close(centerness_target(ltrb), expected)


def _positives(head, cls, reg, boxes, labels):
    """Independent re-derivation of the positives (ATSS on the anchors) in stride units."""
    priors = head.priors_for(cls)
    valid = head.prior_generator.valid_flags(priors, IMAGE_SIZES, pad_size_divisor=32)
    gt, gt_labels, gt_valid = pad_gt_boxes(boxes, labels)
    result = ATSSAssigner(topk=9).assign(priors.anchors_px, priors.num_per_level, gt, gt_valid, valid)
    img, idx = result.positive.nonzero(as_tuple=True)
    stride = priors.strides[idx][:, None]
    centers = priors.centers_px[idx] / stride
    target = result.gather(gt, 0)[img, idx] / stride
    out = torch.cat([r.permute(0, 2, 3, 1).reshape(r.shape[0], -1, r.shape[1]) for r in reg], 1)[img, idx]
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(c.shape[0], -1, c.shape[1]) for c in cls], 1)
    return img, idx, centers, target, out, logits, result.gather(gt_labels, CLASSES)


def test_iou_branch_loss_is_bce_of_iou_on_positives():
    head = make_head("iou_branch", box="dirac")
    perturb(head)
    boxes, labels = ground_truth()
    cls, reg = head(features())
    img, idx, centers, target, out, _, _ = _positives(head, cls, reg, boxes, labels)
    pred = distance2bbox(centers, out[:, :4].relu())
    iou = aligned_box_iou(pred, target)
    expected = F.binary_cross_entropy_with_logits(out[:, 4], iou, reduction="sum") / img.numel()
    torch.testing.assert_close(head.loss(cls, reg, boxes, labels, IMAGE_SIZES)["loss_quality"], expected)


def test_centerness_guided_cls_loss_is_focal_loss_with_centerness_target():
    head = make_head("centerness_guided", box="dirac", weighting="centerness")
    perturb(head)
    boxes, labels = ground_truth()
    cls, reg = head(features())
    img, idx, centers, target, out, logits, target_labels = _positives(head, cls, reg, boxes, labels)
    priors = head.priors_for(cls)
    valid = head.prior_generator.valid_flags(priors, IMAGE_SIZES, pad_size_divisor=32)
    soft = torch.zeros(*logits.shape)
    ltrb = torch.cat([centers - target[:, :2], target[:, 2:] - centers], 1)
    soft[img, idx, target_labels[img, idx]] = centerness_target(ltrb)
    p = logits.sigmoid()
    p_t = p * soft + (1 - p) * (1 - soft)
    alpha_t = 0.25 * soft + 0.75 * (1 - soft)
    focal = alpha_t * (1 - p_t) ** 2 * F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
    expected = (focal.sum(-1) * valid).sum() / img.numel()
    torch.testing.assert_close(head.loss(cls, reg, boxes, labels, IMAGE_SIZES)["loss_cls"], expected)


def test_centerness_weighting_normalises_giou_by_centerness_sum():
    head = make_head("centerness_branch", box="dirac", weighting="centerness")
    perturb(head)
    boxes, labels = ground_truth()
    cls, reg = head(features())
    _, _, centers, target, out, _, _ = _positives(head, cls, reg, boxes, labels)
    ctr = centerness_target(torch.cat([centers - target[:, :2], target[:, 2:] - centers], 1))
    giou = GIoULoss(loss_weight=1.0)(distance2bbox(centers, out[:, :4].relu()), target, weight=ctr, avg_factor=1)
    expected = 2.0 * giou / ctr.sum().clamp(min=1)
    torch.testing.assert_close(head.loss(cls, reg, boxes, labels, IMAGE_SIZES)["loss_bbox"], expected)


def test_delta_scaled_bins_and_dfl_targets():
    box = GeneralBox(reg_max=4, bin_width=2.0, dfl_weight=0.25, dfl_target_eps=0.1)
    torch.testing.assert_close(box.bins, torch.tensor([0.0, 2.0, 4.0, 6.0, 8.0]))
    ltrb = torch.tensor([[3.0, 0.5, 9.0, -1.0]])
    torch.testing.assert_close(box.dfl_targets(ltrb), torch.tensor([[1.5, 0.25, 3.9, 0.0]]))
    logits = torch.full((1, 20), -30.0)
    logits[0, [2, 5, 13, 19]] = 30.0  # one-hot on bins 2, 0, 3, 4 of l, t, r, b
    torch.testing.assert_close(box.decode(logits), torch.tensor([[4.0, 0.0, 6.0, 8.0]]))
    # DFL of a target halfway between bins 1 and 2 (3.0 stride units = 1.5 bins) with uniform logits: ln(5)
    loss = box.loss(torch.zeros(1, 20), torch.tensor([[3.0, 3.0, 3.0, 3.0]]), torch.ones(1), torch.tensor(1.0))
    torch.testing.assert_close(loss["loss_dfl"], torch.tensor(0.25 * math.log(5)))


def test_branch_score_multiplies_class_score_at_test_time():
    head = make_head("centerness_branch", box="dirac", weighting="centerness").eval()
    cls, reg = head(features())
    for c, r in zip(cls, reg):
        c.fill_(2.0)
        r[:, :4] = 1.0
        r[:, 4] = 0.0  # sigmoid = 0.5
    detections = head.predict(cls, reg, IMAGE_SIZES, [(1.0, 1.0)] * 2)
    expected = torch.sigmoid(torch.tensor(2.0)) * 0.5
    torch.testing.assert_close(detections[0]["scores"], torch.full_like(detections[0]["scores"], expected.item()))


def test_branch_factor_comes_after_the_score_threshold_and_top_k():
    """As mmdetection's score_factors: threshold and nms_pre see the class probability alone."""
    head = make_head("centerness_branch", box="dirac", weighting="centerness").eval()
    cls, reg = head(features(batch=1))
    for c, r in zip(cls, reg):
        c.fill_(-10.0)
        r[:, :4] = 1.0
        r[:, 4] = -10.0
    # two priors of level 0 (stride 8), class 1: class probability 0.5 and 0.27, factors 0.02 and 0.9
    cls[0][0, 1, 2, 3], reg[0][0, 4, 2, 3] = 0.0, math.log(0.02 / 0.98)
    cls[0][0, 1, 8, 12], reg[0][0, 4, 8, 12] = -1.0, math.log(0.9 / 0.1)
    [kept] = head.predict(cls, reg, IMAGE_SIZES[:1], [(1.0, 1.0)])
    # 0.5 x 0.02 = 0.01 is under score_thr 0.05 and still kept; the products rank the detections
    torch.testing.assert_close(kept["scores"], torch.tensor([torch.sigmoid(torch.tensor(-1.0)).item() * 0.9, 0.01]))
    head.test_cfg = dataclasses.replace(TEST_CFG, nms_pre=1)
    [top_one] = head.predict(cls, reg, IMAGE_SIZES[:1], [(1.0, 1.0)])
    torch.testing.assert_close(top_one["scores"], torch.tensor([0.01]))   # the higher class probability


def test_inconsistent_options_are_rejected():
    with pytest.raises(ValueError, match="needs loss_cls of type qfl"):
        make_head("joint_qfl", loss_cls=FocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0))
    with pytest.raises(ConfigError, match="did you mean 'joint_qfl'"):
        make_head("joint")
    with pytest.raises(ConfigError, match="missing required key.*loss_weight"):
        make_head("none", section={"type": "iou_branch"})
    with pytest.raises(ValueError, match="bbox_weighting"):
        make_head(weighting="iou")


def make_retina(quality="none"):
    from gfldet.assigners.max_iou import MaxIoUAssigner
    from gfldet.losses.l1 import L1Loss
    from gfldet.models.heads.retina_head import RetinaHead

    torch.manual_seed(0)
    tower = dict(TOWER, norm_groups=0, octave_base_scale=4)
    return RetinaHead(**tower, scales_per_octave=3, ratios=[0.5, 1.0, 2.0], quality={"type": quality},
                      delta_weights=[1.0, 1.0, 1.0, 1.0], delta_clip=math.log(1000 / 16),
                      assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0),
                      loss_cls=CLS_LOSS["qfl" if quality == "joint_qfl" else "focal"],
                      loss_bbox=L1Loss(loss_weight=1.0))


def test_retina_anchors_layout():
    head = make_retina()
    cls, reg = head(features())
    assert cls[0].shape[1] == 9 * CLASSES and reg[0].shape[1] == 36
    priors = head.priors_for(cls)
    assert head.priors_for(cls) is priors  # cached per sizes and device
    assert priors.anchors_px.shape[0] == 9 * sum(c.shape[2] * c.shape[3] for c in cls)
    first = priors.anchors_px[:9]  # level 0, cell (0, 0): centred at (0, 0), stride 8
    wh = first[:, 2:] - first[:, :2]
    sizes = 4 * 8 * 2.0 ** (torch.arange(3) / 3)
    torch.testing.assert_close(wh[:3, 0] * wh[:3, 1], sizes ** 2)  # ratio 0.5, three scales
    torch.testing.assert_close(wh[:3, 1] / wh[:3, 0], torch.full((3,), 0.5))
    torch.testing.assert_close(first[:, :2] + first[:, 2:], torch.zeros(9, 2))


@pytest.mark.parametrize("quality", ["none", "joint_qfl"])
def test_retina_loss_step_and_l1_formula(quality):
    from torchvision.models.detection._utils import BoxCoder

    head = make_retina(quality)
    perturb(head, 0.05)
    boxes, labels = ground_truth()
    cls, reg = head(features())
    losses = head.loss(cls, reg, boxes, labels, IMAGE_SIZES)
    assert set(losses) == {"loss_cls", "loss_bbox"}
    priors = head.priors_for(cls)
    valid = head.prior_generator.valid_flags(priors, IMAGE_SIZES, pad_size_divisor=32)
    gt, _, gt_valid = pad_gt_boxes(boxes, labels)
    result = head.assigner.assign(priors.anchors_px, gt, gt_valid, valid)
    img, idx = result.positive.nonzero(as_tuple=True)
    deltas = torch.cat([r.permute(0, 2, 3, 1).reshape(2, -1, 4) for r in reg], 1)[img, idx]
    target = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(result.gather(gt, 0)[img, idx], priors.anchors_px[idx])
    torch.testing.assert_close(losses["loss_bbox"], (deltas - target).abs().sum() / img.numel())
    sum(losses.values()).backward()
    head.eval()
    assert len(head.predict(cls, reg, IMAGE_SIZES, [(1.0, 1.0)] * 2)) == 2


def test_retina_rejects_branch_quality():
    with pytest.raises(ValueError, match="RetinaHead supports"):
        make_retina("centerness_guided")


def test_dirac_prediction_decodes_stride_scaled_distances_to_original_pixels():
    head = make_head("none", box="dirac", weighting="centerness").eval()
    cls, reg = head(features(batch=1))
    for c, r in zip(cls, reg):
        c.fill_(-10.0)
        r.fill_(1.0)  # l = t = r = b = 1 stride
    cls[1][0, 2, 3, 4] = 5.0  # level 1 (stride 16), cell x = 4, y = 3, class 2
    det = head.predict(cls, reg, [(128, 160)], [(2.0, 2.0)])[0]
    assert det["labels"].tolist() == [2]
    expected = torch.tensor([[64 - 16, 48 - 16, 64 + 16, 48 + 16]]) / 2  # centre (4, 3) x 16 px, +-16 px, / scale 2
    torch.testing.assert_close(det["boxes"], expected)


@pytest.mark.parametrize("make", [lambda: make_head("iou_branch", box="gaussian"), lambda: make_retina("joint_qfl")])
def test_batches_without_objects_give_zero_box_losses(make):
    head = make()
    cls, reg = head(features())
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    losses = head.loss(cls, reg, empty, [torch.zeros(0, dtype=torch.long)] * 2, IMAGE_SIZES)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"] == 0 and losses["loss_cls"] > 0


def make_fovea(quality="none"):
    from gfldet.assigners.fovea import FoveaAssigner
    from gfldet.models.heads.fovea_head import FoveaHead

    torch.manual_seed(0)
    return FoveaHead(**dict(TOWER, norm_groups=0), quality={"type": quality},
                     box_repr={"type": "log", "base_edge": 2.0, "max_ratio": 16.0, "beta": 0.11, "loss_weight": 1.0},
                     bbox_weighting="uniform",
                     assigner=FoveaAssigner(scale_ranges=[(1, 64), (32, 128), (64, 256), (128, 512), (256, 2048)],
                                            sigma=0.4),
                     loss_cls=CLS_LOSS["qfl" if quality == "joint_qfl" else "focal"])


def test_log_box_coding_and_smooth_l1_formula():
    from gfldet.models.heads.box_repr import LogBox

    box = LogBox(base_edge=2.0, max_ratio=16.0, beta=0.11, loss_weight=1.0)
    ltrb = torch.tensor([[2.0, 4.0, 100.0, 0.01]])
    torch.testing.assert_close(box.targets(ltrb), torch.tensor([[0.0, math.log(2), math.log(16), math.log(1 / 16)]]))
    decoded = box.decode(torch.tensor([[0.0, math.log(3), 0.0, 0.0]]))
    torch.testing.assert_close(decoded, torch.tensor([[2.0, 6.0, 2.0, 2.0]]))
    reg = torch.tensor([[0.05, math.log(2) + 1.0, math.log(16), math.log(1 / 16)]])
    expected = 0.5 * 0.05 ** 2 / 0.11 + (1.0 - 0.5 * 0.11)  # quadratic below beta, linear above
    loss = box.loss(reg, ltrb, torch.ones(1), torch.tensor(1.0))["loss_log_box"]
    torch.testing.assert_close(loss, torch.tensor(expected))


@pytest.mark.parametrize("quality", ["none", "joint_qfl"])
def test_fovea_trains_a_step(quality):
    head = make_fovea(quality)
    boxes, labels = ground_truth()
    cls, reg = head(features())
    losses = head.loss(cls, reg, boxes, labels, IMAGE_SIZES)
    assert set(losses) == {"loss_cls", "loss_log_box"}
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_log_box"] > 0
    total.backward()
    head.eval()
    assert len(head.predict(cls, reg, IMAGE_SIZES, [(1.0, 1.0)] * 2)) == 2
