"""SSD head: anchor layout, hard negative mining against a per-image formulation, the QFL variant, probabilities,
and the SSD512 configs building into a detector (mmdetection parity: tests/parity/test_ssd_head_parity.py)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gfldet.assigners.max_iou import MaxIoUAssigner
from gfldet.config import apply_overrides, load_config
from gfldet.losses import QualityFocalLoss
from gfldet.losses.hard_negative_ce import HardNegativeCrossEntropyLoss
from gfldet.losses.smooth_l1 import SmoothL1Loss
from gfldet.models import build_detector
from gfldet.models.heads.postprocess import PostProcessConfig
from gfldet.models.heads.ssd_head import SSDHead, ssd_anchor_shapes

ROOT = Path(__file__).parents[2]
TEST_CFG = PostProcessConfig(score_thr=0.02, nms_pre=1000, nms_iou=0.45, max_per_img=200, min_bbox_size=0)


def make_head(quality: str = "none", num_classes: int = 3) -> SSDHead:
    loss_cls = (HardNegativeCrossEntropyLoss(neg_pos_ratio=3, loss_weight=1.0) if quality == "none"
                else QualityFocalLoss(beta=2.0, loss_weight=1.0))
    torch.manual_seed(0)
    return SSDHead(num_classes=num_classes, in_channels=[8, 16], strides=[8, 16], min_sizes=[16, 40],
                   max_sizes=[40, 80], ratios=[[2], [2, 3]], quality={"type": quality}, prior_prob=0.01,
                   delta_weights=[10, 10, 5, 5], delta_clip=math.log(1000 / 16), pad_size_divisor=1,
                   assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                                           gt_max_assign_all=False),
                   loss_cls=loss_cls, loss_bbox=SmoothL1Loss(beta=1.0, loss_weight=1.0), test_cfg=TEST_CFG)


def feats(batch: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 8, 8, 8, generator=g), torch.randn(batch, 16, 4, 4, generator=g)]


def test_anchor_shapes_order_and_sizes():
    shapes = ssd_anchor_shapes(20, 51, [2, 3])
    assert shapes.shape == (6, 2)
    expected = [(20, 20), (math.sqrt(20 * 51),) * 2, (20 * math.sqrt(2), 20 / math.sqrt(2)),
                (20 / math.sqrt(2), 20 * math.sqrt(2)), (20 * math.sqrt(3), 20 / math.sqrt(3)),
                (20 / math.sqrt(3), 20 * math.sqrt(3))]
    torch.testing.assert_close(shapes, torch.tensor(expected, dtype=torch.float32))


def test_priors_are_centred_on_cells_with_per_level_anchor_counts():
    head = make_head()
    cls_scores, _ = head(feats(1))
    assert [m.shape[1] for m in cls_scores] == [4 * 4, 6 * 4]  # A_l x (C + 1)
    priors = head.priors_for(cls_scores)
    assert head.priors_for(cls_scores) is priors  # cached per sizes and device
    assert priors.num_per_level == (8 * 8 * 4, 4 * 4 * 6)
    # level 1, cell (x=2, y=1), anchor 3 (ratio 2: h/w = 2, sqrt(w h) = 40)
    index = 8 * 8 * 4 + (1 * 4 + 2) * 6 + 3
    x1, y1, x2, y2 = priors.anchors_px[index].tolist()
    assert (x1 + x2) / 2 == pytest.approx(2.5 * 16) and (y1 + y2) / 2 == pytest.approx(1.5 * 16)
    assert (y2 - y1) / (x2 - x1) == pytest.approx(2.0, rel=1e-5)
    assert math.sqrt((y2 - y1) * (x2 - x1)) == pytest.approx(40.0, rel=1e-5)


def _mined_ce_reference(logits, labels, eligible, ratio):
    """Per image (mmdetection's loop): CE of all positives + the top ratio*num_pos negative CEs."""
    total = 0.0
    background = logits.shape[-1] - 1
    for lg, lab, ok in zip(logits, labels, eligible):
        ce = F.cross_entropy(lg, lab, reduction="none")
        pos = ok & (lab < background)
        neg = ok & (lab == background)
        k = min(int(pos.sum()) * ratio, int(neg.sum()))
        total += ce[pos].sum() + ce[neg].topk(k).values.sum()
    return total


@pytest.mark.parametrize("num_pos", [[5, 0, 40], [1, 2, 3]])
def test_hard_negative_mining_equals_per_image_formulation(num_pos):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 50, 4, generator=g) * 3
    labels = torch.full((3, 50), 3)
    for i, n in enumerate(num_pos):
        labels[i, torch.randperm(50, generator=g)[:n]] = torch.randint(0, 3, (n,), generator=g)
    eligible = torch.rand(3, 50, generator=g) > 0.1
    loss = HardNegativeCrossEntropyLoss(neg_pos_ratio=3, loss_weight=1.0)
    got = loss(logits, labels, eligible, avg_factor=7.0)
    torch.testing.assert_close(got, _mined_ce_reference(logits, labels, eligible, 3) / 7.0)
    # image 3 of the first case has 40 positives: all its 10 eligible-or-not negatives are capped by eligibility
    selected = loss.per_sample(logits, labels, eligible) > 0
    assert not (selected & ~eligible).any()


def test_softmax_head_loss_and_probabilities():
    head = make_head("none")
    cls_scores, deltas = head(feats())
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 10.0, 60.0, 30.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.long)]
    losses = head.loss(cls_scores, deltas, boxes, labels, [(64, 64)] * 2)
    assert set(losses) == {"loss_cls", "loss_bbox"} and all(v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(conv.weight.grad is not None for conv in head.cls_convs)
    probs, factors, _ = head.flat_outputs(*head(feats()))
    assert factors is None and probs.shape[-1] == 3
    assert (probs.sum(-1) < 1).all()  # the background column is left out


def test_qfl_head_trains_towards_iou_and_starts_at_prior_prob():
    head = make_head("joint_qfl")
    assert all(torch.allclose(conv.bias, torch.tensor(-math.log(99.0))) for conv in head.cls_convs)
    cls_scores, deltas = head(feats())
    assert [m.shape[1] for m in cls_scores] == [4 * 3, 6 * 3]  # no background channel
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0]]), torch.tensor([[10.0, 10.0, 50.0, 60.0]])]
    labels = [torch.tensor([1]), torch.tensor([0])]
    losses = head.loss(cls_scores, deltas, boxes, labels, [(64, 64)] * 2)
    # the same loss from its formula: QFL over every valid anchor, soft target = IoU of the decoded box
    targets = head.build_targets(cls_scores, boxes, labels, [(64, 64)] * 2)
    logits, reg = head.flat_logits(cls_scores, deltas)
    anchors = targets.priors.anchors_px[targets.pos_prior]
    from gfldet.box_coding import aligned_box_iou
    iou = aligned_box_iou(head.deltas.decode(targets.positives(reg), anchors), targets.gt_boxes_px)
    soft = torch.zeros(2, logits.shape[1], 3)
    soft[targets.pos_img, targets.pos_prior, targets.labels[targets.pos_img, targets.pos_prior]] = iou
    p = logits.sigmoid()
    qfl = F.binary_cross_entropy_with_logits(logits, soft, reduction="none") * (soft - p).abs().pow(2)
    torch.testing.assert_close(losses["loss_cls"], qfl.sum() / targets.num_pos)
    assert 0.005 < head.flat_outputs(cls_scores, deltas)[0].median() < 0.02  # around prior_prob


def test_head_rejects_unsupported_quality_and_mismatched_loss():
    with pytest.raises(ValueError, match="supports the quality options none and joint_qfl"):
        SSDHead(**{**_head_kwargs(), "quality": {"type": "iou_guided"}})
    with pytest.raises(ValueError, match="needs loss_cls of type HardNegativeCrossEntropyLoss"):
        SSDHead(**{**_head_kwargs(), "loss_cls": QualityFocalLoss(beta=2.0, loss_weight=1.0)})
    with pytest.raises(ValueError, match="min_sizes: one entry per level"):
        SSDHead(**{**_head_kwargs(), "min_sizes": [16]})


def _head_kwargs() -> dict:
    head = make_head()
    return dict(num_classes=3, in_channels=[8, 16], strides=[8, 16], min_sizes=[16, 40], max_sizes=[40, 80],
                ratios=[[2], [2, 3]], quality={"type": "none"}, prior_prob=0.01, delta_weights=[10, 10, 5, 5],
                delta_clip=4.0, pad_size_divisor=1, assigner=head.assigner, loss_cls=head.loss_cls,
                loss_bbox=head.loss_bbox, test_cfg=TEST_CFG)


def test_ssd512_config_builds_the_reference_detector():
    cfg = apply_overrides(load_config(ROOT / "configs/ssd/ssd512_coco.yaml"), ["model.backbone.pretrained=false"])
    model = build_detector(cfg.model)
    assert model.neck.strides == [8, 16, 32, 64, 128, 256, 512]
    assert [len(s) for s in model.head.anchor_shapes] == [4, 6, 6, 6, 6, 4, 4]
    assert [c.in_channels for c in model.head.cls_convs] == [512, 1024, 512, 256, 256, 256, 256]
    assert [c.out_channels for c in model.head.cls_convs] == [4 * 81, 6 * 81, 6 * 81, 6 * 81, 6 * 81, 4 * 81, 4 * 81]
    # mmdetection 3.3's SSD512 (configs/ssd/ssd512_coco.py, 80 classes) counted when this test was written
    assert sum(p.numel() for p in model.parameters()) == 36_038_196
