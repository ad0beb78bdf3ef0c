"""GFL head: init, output layout, losses on hand-made cases (perfect boxes, no GT, batch padding)."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.assigners import pad_gt_boxes
from gfldet.models import build_detector
from gfldet.models.heads.dense_head import flatten_levels


@pytest.fixture
def head(small_model_cfg):
    torch.manual_seed(0)
    return build_detector(small_model_cfg()).head


STRIDES = [8, 16, 32, 64, 128]


def _level_sizes(h, w):
    return [(math.ceil(h / s), math.ceil(w / s)) for s in STRIDES]


def test_init_values(head):
    for tower in (head.cls_convs, head.reg_convs):
        conv, norm = tower[0].conv, tower[0].norm
        assert conv.bias is None and abs(conv.weight.std().item() - 0.01) < 0.002
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0) and norm.num_groups == 32
    assert torch.allclose(head.cls_pred.bias, torch.full((4,), -math.log(99)))
    assert torch.count_nonzero(head.reg_pred.bias) == 0 and abs(head.reg_pred.weight.std().item() - 0.01) < 0.002
    assert [s.item() for s in head.scales] == [1.0] * 5


def test_output_layout(small_model_cfg):
    head = build_detector(small_model_cfg("model.head.reg_max=7")).head
    feats = [torch.randn(2, 32, h, w) for h, w in _level_sizes(64, 96)]
    cls, reg = head(feats)
    assert [tuple(c.shape) for c in cls] == [(2, 4, h, w) for h, w in _level_sizes(64, 96)]
    assert reg[0].shape == (2, 4 * 8, 8, 12) and reg[0].dtype == torch.float32


def _unflatten_levels(flat, like):
    """Inverse of flatten_levels: [N, P, K] -> per-level [N, K, H_l, W_l] shaped like ``like``."""
    maps, start = [], 0
    for m in like:
        n = m.shape[-2] * m.shape[-1]
        maps.append(flat[:, start:start + n].reshape(m.shape[0], m.shape[-2], m.shape[-1], -1).permute(0, 3, 1, 2))
        start += n
    return maps


def _perfect_outputs(head, gt_boxes, image_size):
    """Head outputs whose distributions put all mass on the exact (integer) target distances of the positives."""
    sizes = _level_sizes(*image_size)
    cls = [torch.full((1, head.num_classes, h, w), -4.0) for h, w in sizes]
    reg = [torch.zeros(1, 4 * (head.reg_max + 1), h, w) for h, w in sizes]
    priors = head.priors_for(cls)
    boxes, labels, valid = pad_gt_boxes([gt_boxes], [torch.zeros(len(gt_boxes), dtype=torch.long)])
    assignment = head.assigner.assign(priors.anchors_px, priors.num_per_level, boxes, valid, None)
    flat = flatten_levels(reg)
    _, pos = assignment.positive.nonzero(as_tuple=True)
    assert len(pos) > 0
    stride = priors.strides[pos][:, None]
    targets = assignment.gather(boxes, fill=0)[0, pos]
    ltrb = torch.cat([priors.centers_px[pos] - targets[:, :2], targets[:, 2:] - priors.centers_px[pos]], 1) / stride
    assert torch.equal(ltrb, ltrb.round()) and ltrb.max() < head.reg_max
    bins = flat[0, pos].view(len(pos), 4, head.reg_max + 1)
    bins.scatter_(2, ltrb.long()[..., None], 60.0)
    flat[0, pos] = bins.view(len(pos), -1)
    return cls, _unflatten_levels(flat, reg)


def test_perfect_boxes_give_zero_box_losses(head):
    gt = torch.tensor([[32.0, 64.0, 96.0, 128.0]])  # corners on multiples of 32: integer distances in stride units
    cls, reg = _perfect_outputs(head, gt, (192, 160))
    losses = head.loss(cls, reg, [gt], [torch.tensor([0])], [(192, 160)])
    assert losses["loss_bbox"].item() < 1e-5 and losses["loss_dfl"].item() < 1e-5
    uniform = [torch.zeros_like(r) for r in reg]  # every side decodes to reg_max / 2
    worse = head.loss(cls, uniform, [gt], [torch.tensor([0])], [(192, 160)])
    assert worse["loss_bbox"] > 1e-3 and worse["loss_dfl"] > 1e-3


def test_qfl_target_is_the_iou_so_a_perfect_score_has_lower_loss(head):
    gt = torch.tensor([[32.0, 64.0, 96.0, 128.0]])
    cls, reg = _perfect_outputs(head, gt, (192, 160))
    base = head.loss(cls, reg, [gt], [torch.tensor([0])], [(192, 160)])["loss_cls"]
    confident = [c.clone() for c in cls]
    for c in confident:
        c[:, 0] = 8.0  # class 0 everywhere: right on positives (IoU 1), wrong on negatives
    assert head.loss(confident, reg, [gt], [torch.tensor([0])], [(192, 160)])["loss_cls"] > base


def test_no_gt_gives_zero_box_losses_and_a_graph(head):
    sizes = _level_sizes(64, 64)
    cls = [torch.randn(2, 4, h, w, requires_grad=True) for h, w in sizes]
    reg = [torch.randn(2, 68, h, w, requires_grad=True) for h, w in sizes]
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    labels = [torch.zeros(0, dtype=torch.long)] * 2
    losses = head.loss(cls, reg, empty, labels, [(64, 64), (40, 50)])
    assert losses["loss_bbox"].item() == 0 and losses["loss_dfl"].item() == 0 and losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
    assert cls[0].grad.abs().sum() > 0 and torch.isfinite(reg[0].grad).all()


def test_batch_padding_does_not_change_the_losses(head):
    """Priors beyond an image's own (32-rounded) size are ignored: extra padding with junk outputs changes nothing."""
    torch.manual_seed(1)
    small, big = _level_sizes(96, 128), _level_sizes(192, 256)
    cls_small = [torch.randn(1, 4, h, w) for h, w in small]
    reg_small = [torch.randn(1, 68, h, w) for h, w in small]
    cls_big = [torch.randn(1, 4, h, w) * 5 for h, w in big]
    reg_big = [torch.randn(1, 68, h, w) * 5 for h, w in big]
    for s, b in zip(cls_small + reg_small, cls_big + reg_big):
        b[..., : s.shape[-2], : s.shape[-1]] = s
    gt, labels = [torch.tensor([[5.5, 7.0, 60.0, 90.0], [70.0, 10.0, 128.0, 40.5]])], [torch.tensor([1, 3])]
    ref = head.loss(cls_small, reg_small, gt, labels, [(96, 128)])
    got = head.loss(cls_big, reg_big, gt, labels, [(96, 128)])
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-6, atol=0)
