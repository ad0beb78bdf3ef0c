"""Detection losses usable in any dense detector: QFL, DFL (GFL), focal and GIoU (torchvision wrappers).

Functions return per-sample losses (no reduction); the modules reduce them to a scalar
``loss_weight * sum(loss * weight) / avg_factor``.
"""

from .dfl import DistributionFocalLoss, distribution_focal_loss
from .focal import FocalLoss, focal_loss
from .giou import GIoULoss, giou_loss
from .qfl import QualityFocalLoss, quality_focal_loss

__all__ = [
    "DistributionFocalLoss",
    "FocalLoss",
    "GIoULoss",
    "QualityFocalLoss",
    "distribution_focal_loss",
    "focal_loss",
    "giou_loss",
    "quality_focal_loss",
]
