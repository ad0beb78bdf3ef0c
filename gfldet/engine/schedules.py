"""Learning-rate schedules: linear warmup by iterations times a multi-step or cosine decay.

The scheduler is stepped once per iteration. Following mmdetection, warmup always counts iterations while the
decay may count epochs (``by_epoch: true``, the 1x/2x recipes: x0.1 after epochs 8 and 11) or iterations.

Config section ``train.lr_schedule``::

    type: step            # step | cosine
    by_epoch: true        # milestones / cosine period in epochs (true) or iterations (false)
    milestones: [8, 11]   # step only: the LR is multiplied by gamma once each milestone is reached
    gamma: 0.1            # step only
    min_lr_ratio: 0.0     # cosine only: final LR as a fraction of the base LR
    warmup_iters: 500     # 0 disables warmup
    warmup_ratio: 0.001   # LR factor at iteration 0, rising linearly to 1 at warmup_iters
"""
from __future__ import annotations

import bisect
import math
from typing import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from gfldet.config import Config, build_from_cfg

__all__ = ["StepDecay", "CosineDecay", "LR_SCHEDULES", "build_lr_scheduler", "check_lr_schedule"]


class _WarmupDecay:
    """LR factor at a global iteration: ``warmup(it) * decay(progress)``.

    A plain object (not a closure) so that LambdaLR's ``state_dict`` can save it with a checkpoint.
    """

    def __init__(self, *, iters_per_epoch: int, max_iters: int, by_epoch: bool, warmup_iters: int,
                 warmup_ratio: float):
        if iters_per_epoch <= 0 or max_iters <= 0:
            raise ValueError(f"iters_per_epoch and max_iters must be positive, got {iters_per_epoch}, {max_iters}")
        if not 0.0 <= warmup_ratio <= 1.0 or warmup_iters < 0:
            raise ValueError(f"need warmup_iters >= 0 and 0 <= warmup_ratio <= 1, got {warmup_iters}, {warmup_ratio}")
        self.iters_per_epoch = iters_per_epoch
        self.max_iters = max_iters
        self.by_epoch = by_epoch
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio

    def __call__(self, iteration: int) -> float:
        return self.warmup_factor(iteration) * self.decay_factor(iteration)

    def warmup_factor(self, iteration: int) -> float:
        if iteration >= self.warmup_iters:
            return 1.0
        return self.warmup_ratio + (1.0 - self.warmup_ratio) * iteration / self.warmup_iters

    def progress(self, iteration: int) -> int:
        """Completed epochs (``by_epoch``) or iterations; the unit of milestones and of the cosine period."""
        return iteration // self.iters_per_epoch if self.by_epoch else iteration

    def decay_factor(self, iteration: int) -> float:
        raise NotImplementedError


class StepDecay(_WarmupDecay):
    """Multiply the LR by ``gamma`` at each milestone (epochs if ``by_epoch`` else iterations)."""

    def __init__(self, *, milestones: Sequence[int], gamma: float, **kwargs):
        super().__init__(**kwargs)
        if list(milestones) != sorted(milestones) or any(m < 0 for m in milestones):
            raise ValueError(f"milestones: must be increasing and >= 0, got {list(milestones)}")
        self.milestones = [int(m) for m in milestones]
        self.gamma = gamma

    def decay_factor(self, iteration: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, self.progress(iteration))


class CosineDecay(_WarmupDecay):
    """Half-cosine from 1 to ``min_lr_ratio`` over the whole schedule (per epoch if ``by_epoch``)."""

    def __init__(self, *, min_lr_ratio: float, **kwargs):
        super().__init__(**kwargs)
        self.min_lr_ratio = min_lr_ratio

    def decay_factor(self, iteration: int) -> float:
        total = self.max_iters // self.iters_per_epoch if self.by_epoch else self.max_iters
        t = min(self.progress(iteration), total) / max(total, 1)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _step(*, iters_per_epoch: int, max_iters: int, by_epoch: bool, warmup_iters: int, warmup_ratio: float,
          milestones: list[int], gamma: float) -> StepDecay:
    return StepDecay(milestones=milestones, gamma=gamma, iters_per_epoch=iters_per_epoch, max_iters=max_iters,
                     by_epoch=by_epoch, warmup_iters=warmup_iters, warmup_ratio=warmup_ratio)


def _cosine(*, iters_per_epoch: int, max_iters: int, by_epoch: bool, warmup_iters: int, warmup_ratio: float,
            min_lr_ratio: float) -> CosineDecay:
    return CosineDecay(min_lr_ratio=min_lr_ratio, iters_per_epoch=iters_per_epoch, max_iters=max_iters,
                       by_epoch=by_epoch, warmup_iters=warmup_iters, warmup_ratio=warmup_ratio)


LR_SCHEDULES = {"step": _step, "cosine": _cosine}


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, *, iters_per_epoch: int,
                       max_iters: int) -> LambdaLR:
    """A LambdaLR (stepped every iteration) for the ``train.lr_schedule`` section ``cfg``.

    Each parameter group keeps its own base LR (bias multipliers survive); all share one factor.
    """
    factor = build_from_cfg(cfg, LR_SCHEDULES, where="train.lr_schedule", iters_per_epoch=iters_per_epoch,
                            max_iters=max_iters)
    return LambdaLR(optimizer, lr_lambda=factor)


def check_lr_schedule(cfg: Config) -> None:
    """Validate a ``train.lr_schedule`` section before the loader exists (a build with stand-in lengths)."""
    build_from_cfg(cfg, LR_SCHEDULES, where="train.lr_schedule", iters_per_epoch=1, max_iters=1)
