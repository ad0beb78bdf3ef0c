import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from gfldet.losses import QualityFocalLoss, quality_focal_loss


@pytest.mark.parametrize("beta", [1.0, 2.0, 2.5])
def test_qfl_minimum_is_at_sigmoid_equal_target(beta):
    targets = torch.linspace(0.05, 0.95, 10)
    sigmas = torch.linspace(0.001, 0.999, 999)
    logits = torch.logit(sigmas.double()).float()
    for y in targets:
        loss = quality_focal_loss(logits[:, None], torch.zeros(999, dtype=torch.long), y.expand(999), beta=beta)
        best = sigmas[loss.argmin()]
        assert abs(best - y) <= 1e-3, (y, best)
        if beta == 1.0:
            continue  # |y - sigma| has a kink at the minimum: no zero gradient to check
        at_y = torch.logit(y).reshape(1, 1).requires_grad_()
        quality_focal_loss(at_y, torch.zeros(1, dtype=torch.long), y.reshape(1), beta=beta).sum().backward()
        assert abs(at_y.grad.item()) < 1e-6


@pytest.mark.parametrize("beta", [0.0, 2.0, 2.5])
def test_qfl_with_binary_targets_is_focal_loss(beta):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 5, generator=g) * 3
    labels = torch.randint(0, 6, (40,), generator=g)  # 5 = background
    one_hot = torch.nn.functional.one_hot(labels, 6)[:, :5].float()
    expected = sigmoid_focal_loss(logits, one_hot, alpha=-1, gamma=beta, reduction="none").sum(dim=1)
    torch.testing.assert_close(quality_focal_loss(logits, labels, torch.ones(40), beta=beta), expected)


def test_qfl_matches_the_definition_and_ignores_background_scores():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0], [-0.3, 0.7]])
    labels = torch.tensor([1, 2, -1])  # 2 (= C) and -1 are background
    scores = torch.tensor([0.6, 0.9, 0.4])
    sig = logits.sigmoid()
    target = torch.tensor([[0.0, 0.6], [0.0, 0.0], [0.0, 0.0]])
    bce = -(target * sig.log() + (1 - target) * (1 - sig).log())
    expected = (bce * (target - sig).abs() ** 2).sum(dim=1)
    torch.testing.assert_close(quality_focal_loss(logits, labels, scores), expected)


def test_qfl_is_stable_and_float32_under_autocast():
    logits = torch.tensor([[120.0, -120.0], [-120.0, 120.0]])
    loss = quality_focal_loss(logits, torch.tensor([0, 0]), torch.tensor([1.0, 0.5]))
    assert torch.isfinite(loss).all() and loss[0].item() == 0.0
    assert loss[1].item() == pytest.approx(120 * 0.5 * 0.25 + 120 * 1.0, rel=1e-5)
    g = torch.Generator().manual_seed(1)
    half = (torch.randn(30, 4, generator=g) * 4).bfloat16()
    labels, scores = torch.randint(0, 5, (30,), generator=g), torch.rand(30, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = quality_focal_loss(half, labels, scores.bfloat16())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, quality_focal_loss(half.float(), labels, scores.bfloat16().float()))


def test_qfl_module_reduction_and_shape_errors():
    g = torch.Generator().manual_seed(2)
    logits, labels, scores = torch.randn(6, 3, generator=g), torch.tensor([0, 3, 1, 2, 3, 0]), torch.rand(6)
    weight = torch.rand(6, generator=g)
    module = QualityFocalLoss(beta=2.0, loss_weight=0.5)
    per_sample = quality_focal_loss(logits, labels, scores)
    expected = 0.5 * (per_sample * weight).sum() / 4
    torch.testing.assert_close(module(logits, labels, scores, weight=weight, avg_factor=4.0), expected)
    torch.testing.assert_close(module(logits, labels, scores), 0.5 * per_sample.mean())
    with pytest.raises(ValueError, match=r"logits \[N, C\] and labels \[N\]"):
        quality_focal_loss(logits, labels[:5], scores)
    with pytest.raises(TypeError, match="integer"):
        quality_focal_loss(logits, labels.float(), scores)
