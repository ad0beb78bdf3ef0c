"""Box representations of GFL's Table 2(a): how a head's regression channels become ltrb distances, and the loss
each representation adds to the GIoU loss on decoded boxes.

All distances are in *stride units* of the prior's level. ``decode`` maps regression outputs [..., channels] to ltrb
distances [..., 4]; ``loss`` takes the positives' outputs [M, channels], their target ltrb distances [M, 4]
(unclamped, stride units), a per-positive weight [M] and the normaliser of the box losses (the summed weight), and
returns a dict of named scalar losses (empty when the representation adds none).
"""
from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F

from gfldet.box_coding import integral_bins, integral_distance
from gfldet.losses import DistributionFocalLoss
from gfldet.losses.gaussian import GaussianNLLLoss

__all__ = ["BoxRepresentation", "DiracBox", "GaussianBox", "GeneralBox", "LogBox", "BOX_REPRESENTATIONS",
           "per_side", "side_weighted_dfl"]


def per_side(weight: Tensor, avg_factor: Tensor) -> tuple[Tensor, Tensor]:
    """Per-positive weights [M] and box normaliser -> per-side weights [M, 4] and 4 x the normaliser (a loss summed
    over the 4 sides of each positive, as GFL's DFL)."""
    return weight[:, None].expand(-1, 4), 4 * avg_factor


def side_weighted_dfl(loss_dfl: nn.Module, reg: Tensor, target_bins: Tensor, weight: Tensor,
                      avg_factor: Tensor) -> Tensor:
    """DFL of the positives' distribution logits reg [M, 4*(n+1)] against target_bins [M, 4] (bin units, in
    [0, n)), each side weighted by its positive's weight [M], normalised by 4 x avg_factor (mmdetection 3.3)."""
    side_weight, side_avg = per_side(weight, avg_factor)
    return loss_dfl(reg.reshape(-1, reg.shape[-1] // 4), target_bins.reshape(-1), weight=side_weight.reshape(-1),
                    avg_factor=side_avg)


class BoxRepresentation(nn.Module):
    """Interface: ``channels`` regression outputs per prior, ``decode`` and ``loss`` (see the module docstring)."""

    channels: int

    def decode(self, reg: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, reg: Tensor, target_ltrb: Tensor, weight: Tensor, avg_factor: Tensor) -> dict[str, Tensor]:
        return {}


class DiracBox(BoxRepresentation):
    """One value per side (a Dirac delta): distance = ReLU(output), as FCOS with ``norm_on_bbox``; only GIoU."""

    channels = 4

    def decode(self, reg: Tensor) -> Tensor:
        return reg.relu()


class GaussianBox(BoxRepresentation):
    """Each side is N(mean, sigma^2): channels = 4 means then 4 log-variances; distance = ReLU(mean); adds
    ``loss_gaussian``, the Gaussian NLL per side weighted like DFL (per side, normalised by 4 x the weight sum)."""

    channels = 8

    def __init__(self, *, loss_weight: float, var_eps: float) -> None:
        super().__init__()
        self.loss_nll = GaussianNLLLoss(loss_weight=loss_weight, eps=var_eps)

    def decode(self, reg: Tensor) -> Tensor:
        return reg[..., :4].relu()

    def loss(self, reg: Tensor, target_ltrb: Tensor, weight: Tensor, avg_factor: Tensor) -> dict[str, Tensor]:
        side_weight, side_avg = per_side(weight, avg_factor)
        nll = self.loss_nll(self.decode(reg), reg[..., 4:], target_ltrb, weight=side_weight, avg_factor=side_avg)
        return {"loss_gaussian": nll}


class GeneralBox(BoxRepresentation):
    """GFL's general distribution: per side a softmax over bins ``bin_width * {0..reg_max}`` (the paper's Delta and
    n), distance = its expectation. ``dfl_weight`` None = "general w/o DFL"; otherwise adds ``loss_dfl`` with
    targets in bin units, ``ltrb / bin_width`` clamped to ``[0, reg_max - dfl_target_eps]``.
    """

    def __init__(self, *, reg_max: int, bin_width: float, dfl_weight: float | None, dfl_target_eps: float) -> None:
        super().__init__()
        if reg_max < 1 or bin_width <= 0:
            raise ValueError(f"GeneralBox: need reg_max >= 1 and bin_width > 0, got {reg_max} and {bin_width}")
        self.reg_max, self.bin_width, self.dfl_target_eps = reg_max, bin_width, dfl_target_eps
        self.channels = 4 * (reg_max + 1)
        self.loss_dfl = None if dfl_weight is None else DistributionFocalLoss(loss_weight=dfl_weight)
        self.register_buffer("bins", integral_bins(reg_max, bin_width), persistent=False)

    def decode(self, reg: Tensor) -> Tensor:
        return integral_distance(reg, self.bins)

    def dfl_targets(self, target_ltrb: Tensor) -> Tensor:
        """Target ltrb [M, 4] in stride units -> DFL targets [M, 4] in bin units, in [0, reg_max - eps]."""
        return (target_ltrb / self.bin_width).clamp(min=0, max=self.reg_max - self.dfl_target_eps)

    def loss(self, reg: Tensor, target_ltrb: Tensor, weight: Tensor, avg_factor: Tensor) -> dict[str, Tensor]:
        if self.loss_dfl is None:
            return {}
        return {"loss_dfl": side_weighted_dfl(self.loss_dfl, reg, self.dfl_targets(target_ltrb), weight, avg_factor)}


class LogBox(BoxRepresentation):
    """FoveaBox's coding: distance = ``base_edge * exp(output)`` (stride units; FoveaBox's base edge 16..256 px is
    2 strides on every level); adds ``loss_log_box``, a smooth-L1 (``beta``) between the outputs and
    ``log(clamp(ltrb / base_edge, 1 / max_ratio, max_ratio))``, summed over sides, normalised by the weight sum."""

    channels = 4

    def __init__(self, *, base_edge: float, max_ratio: float, beta: float, loss_weight: float) -> None:
        super().__init__()
        self.base_edge, self.max_ratio, self.beta, self.loss_weight = base_edge, max_ratio, beta, loss_weight

    def decode(self, reg: Tensor) -> Tensor:
        # exp of an unclamped output can overflow early in training: cap at the largest target (max_ratio)
        return self.base_edge * reg.clamp(max=math.log(self.max_ratio)).exp()

    def targets(self, target_ltrb: Tensor) -> Tensor:
        """Target ltrb [M, 4] (stride units) -> regression targets [M, 4] (log of base-edge units)."""
        return (target_ltrb / self.base_edge).clamp(min=1 / self.max_ratio, max=self.max_ratio).log()

    def loss(self, reg: Tensor, target_ltrb: Tensor, weight: Tensor, avg_factor: Tensor) -> dict[str, Tensor]:
        loss = F.smooth_l1_loss(reg.float(), self.targets(target_ltrb), beta=self.beta, reduction="none")
        return {"loss_log_box": self.loss_weight * (loss.sum(dim=1) * weight).sum() / avg_factor}


BOX_REPRESENTATIONS = {"dirac": DiracBox, "gaussian": GaussianBox, "general": GeneralBox, "log": LogBox}
