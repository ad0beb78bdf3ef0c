"""Quality representations of GFL's Table 1(a): where a localisation-quality estimate enters a dense head.

``quality: {type: ...}`` -- quality target -- how it is used:
- ``none``              -- none          -- plain focal loss on one-hot class targets;
- ``centerness_branch`` -- centerness    -- a separate 1-channel branch on the regression tower, BCE on positives
                                            (its ``loss_weight``), sigmoid x class score at test time;
- ``iou_branch``        -- IoU(pred, GT) -- the same with the IoU target;
- ``centerness_guided`` -- centerness    -- the soft target of the labelled class in a focal loss (loss_cls:
                                            soft_focal); no branch;
- ``iou_guided``        -- IoU(pred, GT) -- the same with the IoU target;
- ``joint_qfl``         -- IoU(pred, GT) -- GFL: the soft target of QualityFocalLoss (loss_cls: qfl); the class
                                            score is the quality.

The IoU target uses the detached predicted box; centerness is FCOS's
``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of the prior centre's distances to its GT box.
"""
from __future__ import annotations

from torch import Tensor, nn

from gfldet.box_coding import aligned_box_iou
from gfldet.losses import FocalLoss, QualityFocalLoss
from gfldet.losses.bce import BinaryCrossEntropyLoss
from gfldet.losses.soft_focal import SoftFocalLoss

_CLS_LOSSES = {"focal": FocalLoss, "soft_focal": SoftFocalLoss, "qfl": QualityFocalLoss}

__all__ = ["Quality", "QUALITY_OPTIONS", "centerness_target", "quality_target"]


class Quality:
    """One quality option. ``target``: none | centerness | iou; ``use``: none | branch | cls_target;
    ``cls_loss``: the loss_cls type the option needs; ``branch_loss``: the branch's BCE (branch options only)."""

    target = "none"
    use = "none"
    cls_loss = "focal"
    branch_loss: BinaryCrossEntropyLoss | None = None

    @property
    def has_branch(self) -> bool:
        return self.use == "branch"

    @property
    def soft_cls_target(self) -> bool:
        return self.use == "cls_target"

    def check_cls_loss(self, loss_cls: nn.Module) -> None:
        """Raise ValueError unless ``loss_cls`` is the classification loss this option trains with."""
        expected = _CLS_LOSSES[self.cls_loss]
        if type(loss_cls) is not expected:
            raise ValueError(f"quality '{type(self).__name__}' needs loss_cls of type {self.cls_loss} "
                             f"({expected.__name__}), got {type(loss_cls).__name__}")


class NoQuality(Quality):
    pass


class CenternessBranch(Quality):
    target, use = "centerness", "branch"

    def __init__(self, *, loss_weight: float) -> None:
        self.branch_loss = BinaryCrossEntropyLoss(loss_weight=loss_weight)


class IoUBranch(CenternessBranch):
    target = "iou"


class CenternessGuided(Quality):
    target, use, cls_loss = "centerness", "cls_target", "soft_focal"


class IoUGuided(CenternessGuided):
    target = "iou"


class JointQFL(Quality):
    target, use, cls_loss = "iou", "cls_target", "qfl"


QUALITY_OPTIONS = {"none": NoQuality, "centerness_branch": CenternessBranch, "iou_branch": IoUBranch,
                   "centerness_guided": CenternessGuided, "iou_guided": IoUGuided, "joint_qfl": JointQFL}


def centerness_target(ltrb: Tensor) -> Tensor:
    """FCOS centerness of distances ``ltrb [M, 4]`` (> 0 for points inside their box) -> ``[M]`` in [0, 1]."""
    left_right, top_bottom = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    ratio = (left_right.min(dim=1).values / left_right.max(dim=1).values) * (
        top_bottom.min(dim=1).values / top_bottom.max(dim=1).values)
    return ratio.clamp(min=0).sqrt()


def quality_target(kind: str, *, target_ltrb: Tensor, pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
    """Quality targets ``[M]`` of the positives: ``centerness`` from the target ltrb [M, 4], ``iou`` between the
    detached predicted boxes [M, 4] and the GT boxes [M, 4] (xyxy, same units)."""
    if kind == "centerness":
        return centerness_target(target_ltrb)
    if kind == "iou":
        return aligned_box_iou(pred_boxes.detach(), target_boxes)
    raise ValueError(f"quality_target: kind must be 'centerness' or 'iou', got {kind!r}")
