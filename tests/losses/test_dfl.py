import pytest
import torch

from gfldet.box_coding import integral_bins, integral_distance
from gfldet.losses import DistributionFocalLoss, distribution_focal_loss

TARGETS = torch.tensor([0.0, 0.3, 2.5, 7.75, 11.0, 15.9])


def test_dfl_matches_the_two_bin_definition():
    logits = torch.randn(6, 17, generator=torch.Generator().manual_seed(0))
    log_p = logits.log_softmax(dim=1)
    left = TARGETS.floor().long()
    expected = -(left + 1 - TARGETS) * log_p.gather(1, left[:, None])[:, 0] - (TARGETS - left) * log_p.gather(
        1, (left + 1)[:, None]
    )[:, 0]
    torch.testing.assert_close(distribution_focal_loss(logits, TARGETS), expected)


def test_dfl_optimum_recovers_the_target():
    """Minimising DFL over free logits puts the mass on the two neighbouring bins; their expectation is y."""
    logits = torch.zeros(len(TARGETS), 17, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.5)
    for _ in range(150):
        optimiser.zero_grad()
        distribution_focal_loss(logits, TARGETS).sum().backward()
        optimiser.step()
    expectation = logits.detach().softmax(dim=1) @ integral_bins(16)
    torch.testing.assert_close(expectation, TARGETS, atol=2e-3, rtol=0)


@pytest.mark.parametrize("y", [0.25, 3.6, 14.05])
def test_dfl_two_bin_argmin_is_y(y):
    """Over distributions on the bins floor(y), floor(y)+1, the loss is smallest where the mean equals y."""
    left = int(y)
    p_right = torch.linspace(0.001, 0.999, 999)
    logits = torch.full((999, 17), -30.0)
    logits[:, left] = torch.log1p(-p_right)
    logits[:, left + 1] = torch.log(p_right)
    loss = distribution_focal_loss(logits, torch.full((999,), y))
    best = logits[loss.argmin()]
    assert integral_distance(best.repeat(4), integral_bins(16))[0].item() == pytest.approx(y, abs=1e-3)


def test_dfl_module_reduction_and_errors():
    logits = torch.randn(6, 17, generator=torch.Generator().manual_seed(1))
    weight = torch.linspace(0.1, 1.0, 6)
    module = DistributionFocalLoss(loss_weight=0.25)
    per_sample = distribution_focal_loss(logits, TARGETS)
    torch.testing.assert_close(module(logits, TARGETS, weight=weight, avg_factor=4.0),
                               0.25 * (per_sample * weight).sum() / 4)
    with pytest.raises(ValueError, match=r"logits \[M, n\+1\] and target \[M\]"):
        distribution_focal_loss(logits, TARGETS[:, None])
    assert distribution_focal_loss(logits.bfloat16(), TARGETS).dtype == torch.float32
