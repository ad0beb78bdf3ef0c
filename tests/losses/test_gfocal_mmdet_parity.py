"""Our QFL / DFL / GIoU against mmdetection 3.3's (skipped when mmdetection is not installed)."""

import torch

from gfldet.losses import distribution_focal_loss, giou_loss, quality_focal_loss
from tests.mmdet_compat import import_mmdet

import_mmdet()
from mmdet.models.losses import DistributionFocalLoss, GIoULoss, QualityFocalLoss  # noqa: E402


def test_qfl_and_dfl_match_mmdetection_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=g) * 3
    labels = torch.randint(0, 8, (200,), generator=g)  # 7 = background
    scores = torch.rand(200, generator=g)
    reference = QualityFocalLoss(beta=2.0, reduction="none")(logits, (labels, scores))
    assert torch.equal(quality_focal_loss(logits, labels, scores, beta=2.0), reference)
    reg_logits = torch.randn(300, 17, generator=g) * 2
    target = torch.rand(300, generator=g) * 15.9
    reference = DistributionFocalLoss(reduction="none")(reg_logits, target)
    assert torch.equal(distribution_focal_loss(reg_logits, target), reference)


def test_giou_matches_mmdetection():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(100, 2, generator=g) * 20
    pred = torch.cat([xy, xy + torch.rand(100, 2, generator=g) * 10 + 0.5], dim=1)
    target = pred + torch.randn(100, 4, generator=g)
    target[:, 2:] = torch.maximum(target[:, 2:], target[:, :2] + 0.5)
    reference = GIoULoss(reduction="none")(pred, target)
    torch.testing.assert_close(giou_loss(pred, target), reference, rtol=1e-5, atol=1e-6)
