"""Quality Focal Loss (GFL, Li et al. 2020): focal-style BCE against a soft (IoU) class target."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from ._common import WeightedLoss, check_class_inputs, soft_one_hot


def quality_focal_loss(logits: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0) -> Tensor:
    """Per-sample Quality Focal Loss.

    ``loss[i] = sum_c BCE(sigmoid(logits[i, c]), y[i, c]) * |y[i, c] - sigmoid(logits[i, c])| ** beta``
    with ``y[i, c] = scores[i]`` if ``c == labels[i]`` and 0 otherwise. Computed in float32 (also under
    autocast) with the stable BCE-with-logits. Nothing here is specific to GFL: any dense detector with
    sigmoid class logits and a quality target in ``[0, 1]`` can use it.

    Args:
        logits: ``[N, C]`` class logits (before sigmoid).
        labels: ``[N]`` int64 class indices in ``[0, C]``; ``C`` (or any value outside ``[0, C)``) = background.
        scores: ``[N]`` float quality targets in ``[0, 1]`` for the labelled class (e.g. IoU of the predicted
            box with its GT); ignored for background samples.
        beta: exponent of the modulating factor ``|y - sigma|``.

    Returns:
        ``[N]`` float32 loss per sample, summed over classes (no reduction over samples).
    """
    check_class_inputs("quality_focal_loss", logits, labels)
    if scores.shape != labels.shape:
        raise ValueError(f"quality_focal_loss: scores must be [N] like labels, got {tuple(scores.shape)}")
    logits = logits.float()
    target = soft_one_hot(labels, scores.float(), logits.shape[1])
    modulator = (target - logits.sigmoid()).abs().pow(beta)
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * modulator).sum(dim=1)


class QualityFocalLoss(WeightedLoss):
    """:func:`quality_focal_loss` reduced to a scalar (:class:`WeightedLoss`; ``weight [N]``)."""

    hyper_parameters = ("beta",)

    def __init__(self, *, beta: float, loss_weight: float) -> None:
        super().__init__(loss_weight=loss_weight)
        self.beta = beta

    def per_sample(self, logits: Tensor, labels: Tensor, scores: Tensor) -> Tensor:
        """``logits [N, C]``, ``labels [N]`` (C = background), ``scores [N]`` -> ``[N]``."""
        return quality_focal_loss(logits, labels, scores, beta=self.beta)
