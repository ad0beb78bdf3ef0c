"""Losses of the ablation variants against their formulas: Gaussian NLL, focal loss with soft targets, BCE."""
from __future__ import annotations

import math

import pytest
import torch

from gfldet.losses import focal_loss
from gfldet.losses.bce import BinaryCrossEntropyLoss
from gfldet.losses.gaussian import GaussianNLLLoss, gaussian_nll_loss
from gfldet.losses.soft_focal import SoftFocalLoss, soft_focal_loss


def test_gaussian_nll_formula():
    mean = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    log_var = torch.tensor([[0.0, math.log(4.0), -1.0, 2.0]])
    target = torch.tensor([[2.0, 2.0, 0.0, 4.5]])
    var = log_var.exp()
    expected = 0.5 * (torch.log(var) + (target - mean) ** 2 / var)
    torch.testing.assert_close(gaussian_nll_loss(mean, log_var, target), expected)
    assert gaussian_nll_loss(mean, log_var, target)[0, 0] == pytest.approx(0.5)  # log 1 + 1 / 1


def test_gaussian_nll_gradient_pulls_mean_to_target_and_variance_to_error():
    mean = torch.zeros(1, 4, requires_grad=True)
    log_var = torch.zeros(1, 4, requires_grad=True)
    GaussianNLLLoss(loss_weight=1.0)(mean, log_var, torch.full((1, 4), 0.5)).backward()
    assert (mean.grad < 0).all()  # increase the mean towards 0.5
    assert (log_var.grad > 0).all()  # error^2 = 0.25 < var = 1: shrink the variance


def test_gaussian_module_weighting_and_normalisation():
    mean, log_var, target = torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(2, 4)
    loss = GaussianNLLLoss(loss_weight=2.0)(mean, log_var, target, weight=torch.tensor([[1.0], [0.0]]),
                                            avg_factor=4.0)
    assert loss.item() == pytest.approx(2.0 * 4 * 0.5 / 4.0)
    with pytest.raises(ValueError, match="one shape"):
        gaussian_nll_loss(mean, log_var[:, :2], target)


def test_soft_focal_formula():
    logits = torch.tensor([[0.3, -1.2, 2.0], [-0.5, 0.1, -2.0]])
    labels = torch.tensor([1, 3])  # second row is background
    scores = torch.tensor([0.6, 0.9])
    y = torch.tensor([[0.0, 0.6, 0.0], [0.0, 0.0, 0.0]])
    p = logits.sigmoid()
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 0.25 * y + 0.75 * (1 - y)
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    expected = (alpha_t * (1 - p_t) ** 2 * bce).sum(dim=1)
    torch.testing.assert_close(soft_focal_loss(logits, labels, scores), expected)


def test_soft_focal_with_unit_scores_is_focal_loss():
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 4, 3, 2, 4])
    torch.testing.assert_close(soft_focal_loss(logits, labels, torch.ones(6)), focal_loss(logits, labels))
    module = SoftFocalLoss(alpha=0.25, gamma=2.0, loss_weight=0.5)
    expected = 0.5 * focal_loss(logits, labels).sum() / 3.0
    torch.testing.assert_close(module(logits, labels, torch.ones(6), avg_factor=3.0), expected)


def test_bce_module():
    logits, target = torch.tensor([0.0, 2.0]), torch.tensor([0.5, 1.0])
    expected = (math.log(2) + math.log(1 + math.exp(-2.0))) / 2
    assert BinaryCrossEntropyLoss(loss_weight=1.0)(logits, target, avg_factor=2).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="differ in shape"):
        BinaryCrossEntropyLoss(loss_weight=1.0)(logits, target[:1])
