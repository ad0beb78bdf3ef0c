"""What the loss modules share: class targets from labels, shape checks, and :class:`WeightedLoss`, the reduction of
a per-sample loss to the scalar the heads add up."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


def check_class_inputs(name: str, logits: Tensor, labels: Tensor) -> None:
    """Raise a clear error unless ``logits`` is ``[N, C]`` and ``labels`` is an integer ``[N]``."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"{name}: expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise TypeError(f"{name}: labels must be integer class indices (C = background), got {labels.dtype}")


def soft_one_hot(labels: Tensor, scores: Tensor, num_classes: int) -> Tensor:
    """Dense class targets ``[N, C]``: ``scores[i]`` at column ``labels[i]``, 0 elsewhere.

    Labels outside ``[0, C)`` (``C`` is the background label) give an all-zero row. Built with a
    scatter rather than boolean indexing so that no host-device synchronisation happens.
    """
    is_fg = (labels >= 0) & (labels < num_classes)
    target = scores.new_zeros((labels.shape[0], num_classes))
    column = labels.clamp(0, num_classes - 1).unsqueeze(1)
    return target.scatter_(1, column, torch.where(is_fg, scores, 0.0).unsqueeze(1))


def weighted_reduce(
    loss: Tensor, weight: Optional[Tensor], avg_factor: Optional[float | Tensor], loss_weight: float
) -> Tensor:
    """``loss_weight * sum(loss * weight) / avg_factor``; the plain mean of ``loss * weight`` when
    ``avg_factor`` is None. ``weight`` broadcasts against ``loss``."""
    if weight is not None:
        loss = loss * weight
    total = loss.sum() / avg_factor if avg_factor is not None else loss.mean()
    return loss_weight * total


class WeightedLoss(nn.Module):
    """A per-sample loss reduced to ``loss_weight * sum(loss * weight) / avg_factor`` (the mean of
    ``loss * weight`` when ``avg_factor`` is None).

    Subclasses implement :meth:`per_sample` (the unreduced loss of their inputs, float32; its docstring gives the
    shapes) and name the hyper-parameters they store in ``hyper_parameters`` (shown by ``repr``). ``weight``
    broadcasts against the per-sample loss.
    """

    hyper_parameters: tuple[str, ...] = ()

    def __init__(self, *, loss_weight: float) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def per_sample(self, *inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, *inputs: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[float | Tensor] = None) -> Tensor:
        return weighted_reduce(self.per_sample(*inputs), weight, avg_factor, self.loss_weight)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in (*self.hyper_parameters, "loss_weight"))
