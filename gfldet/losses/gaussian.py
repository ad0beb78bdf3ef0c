"""Gaussian negative log-likelihood of box sides (the "Gaussian" box representation of GFL's Table 2(a)).

Each side distance is predicted as a normal distribution N(mean, sigma^2), the network giving ``mean`` and
``log_var = log(sigma^2)``. The loss is ``0.5 * (log_var + (y - mean)^2 / exp(log_var))`` per side: the KL loss of
He et al. (2019, "Bounding box regression with uncertainty") up to a constant, computed with
``torch.nn.functional.gaussian_nll_loss`` (``full=False``).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ._common import WeightedLoss

__all__ = ["gaussian_nll_loss", "GaussianNLLLoss"]


def gaussian_nll_loss(mean: Tensor, log_var: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-element Gaussian NLL ``0.5 * (log var + (target - mean)^2 / var)``, var = max(exp(log_var), eps).

    Args:
        mean, log_var, target: ``[M, 4]`` (or any equal shapes); mean and target in the same units (stride units in
            the heads), log_var the log of the variance in those units squared.
        eps: variance floor (torch's ``gaussian_nll_loss`` clamp) for numerical safety.

    Returns:
        The loss, same shape as ``mean``, float32.
    """
    if not (mean.shape == log_var.shape == target.shape):
        raise ValueError(f"gaussian_nll_loss: mean, log_var and target must have one shape, got "
                         f"{tuple(mean.shape)}, {tuple(log_var.shape)}, {tuple(target.shape)}")
    var = torch.exp(log_var.float())
    return F.gaussian_nll_loss(mean.float(), target.float(), var, full=False, eps=eps, reduction="none")


class GaussianNLLLoss(WeightedLoss):
    """:func:`gaussian_nll_loss` reduced to a scalar (:class:`WeightedLoss`; ``weight`` e.g. ``[M, 1]``)."""

    hyper_parameters = ("eps",)

    def __init__(self, *, loss_weight: float, eps: float = 1e-6) -> None:
        super().__init__(loss_weight=loss_weight)
        self.eps = eps

    def per_sample(self, mean: Tensor, log_var: Tensor, target: Tensor) -> Tensor:
        """``mean``, ``log_var``, ``target`` ``[M, 4]`` -> ``[M, 4]``."""
        return gaussian_nll_loss(mean, log_var, target, eps=self.eps)
