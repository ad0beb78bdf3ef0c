"""Label assignment for dense detectors, batched over images (padded GTs, per-image valid priors)."""

from .atss import ATSSAssigner, assign_per_image
from .base import AssignResult, pad_gt_boxes
from .nearest import LevelGrid, nearest_priors

__all__ = ["ATSSAssigner", "AssignResult", "LevelGrid", "assign_per_image", "nearest_priors", "pad_gt_boxes"]
