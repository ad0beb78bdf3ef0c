import pytest
import torch
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from gfldet.losses import FocalLoss, GIoULoss, focal_loss, giou_loss


def test_giou_loss_values():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 2.0, 1.0]])
    # identical -> 0; touching unit squares: IoU 0, enclosing 2, union 2 -> 1; half overlap: 1 - 1/2
    torch.testing.assert_close(giou_loss(pred, target), torch.tensor([0.0, 1.0, 0.5]))
    module = GIoULoss(loss_weight=2.0)
    weight = torch.tensor([1.0, 0.5, 2.0])
    torch.testing.assert_close(module(pred, target, weight=weight, avg_factor=2.0), torch.tensor(2.0 * (0.5 + 1.0) / 2))
    with pytest.raises(ValueError, match=r"\[M, 4\]"):
        giou_loss(pred, target[:2])


def test_giou_loss_is_torchvision_in_float32_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(200, 4, generator=g) * 10
    pred = torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] + 0.1], dim=1)
    target = pred + 3 * torch.randn(200, 4, generator=g)  # many pairs without any overlap too
    target[:, 2:] = torch.maximum(target[:, 2:], target[:, :2] + 0.1)
    ours_pred, theirs_pred = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    ours, theirs = giou_loss(ours_pred, target), generalized_box_iou_loss(theirs_pred, target, reduction="none")
    assert torch.equal(ours, theirs) and (ours > 1).any() and (ours < 1).any()
    weight = torch.rand(200, generator=g)
    (ours * weight).sum().backward()
    (theirs * weight).sum().backward()
    assert torch.equal(ours_pred.grad, theirs_pred.grad)
    assert giou_loss(pred.half(), target.half()).dtype == torch.float32


def test_focal_loss_is_torchvision_on_one_hot_targets():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(30, 4, generator=g) * 2
    labels = torch.randint(0, 5, (30,), generator=g)  # 4 = background
    one_hot = torch.nn.functional.one_hot(labels, 5)[:, :4].float()
    expected = sigmoid_focal_loss(logits, one_hot, alpha=0.25, gamma=2.0, reduction="none").sum(dim=1)
    torch.testing.assert_close(focal_loss(logits, labels), expected)
    background = labels == 4
    assert background.any()
    torch.testing.assert_close(focal_loss(logits, torch.where(background, -1, labels)), expected)
    module = FocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0)
    torch.testing.assert_close(module(logits, labels, avg_factor=3), expected.sum() / 3)


def test_loss_modules_show_their_hyper_parameters_and_take_weights_by_name():
    from gfldet.losses.soft_focal import SoftFocalLoss

    assert repr(GIoULoss(loss_weight=2.0)) == "GIoULoss(eps=1e-07, loss_weight=2.0)"
    assert repr(SoftFocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0)) == \
        "SoftFocalLoss(alpha=0.25, gamma=2.0, loss_weight=1.0)"
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(TypeError):  # a weight passed by position would be taken for a third input
        GIoULoss(loss_weight=1.0)(boxes, boxes, torch.ones(1))
