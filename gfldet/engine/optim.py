"""Optimiser construction: parameter groups (bias / norm multipliers) and LR scaling by total batch size.

Config section ``optimizer`` (defaults in ``configs/_base_/schedules/``)::

    type: SGD               # any name of OPTIMIZERS; remaining keys go to its constructor (lr, momentum, ...)
    lr: 0.01                # LR at ``base_batch_size`` images per step (all processes together)
    bias_lr_mult: 1.0       # LR multiplier for biases of non-norm layers (GFocal used 2.0, mmdetection 1.0)
    bias_decay_mult: 1.0    # weight-decay multiplier for biases of non-norm layers (GFocal used 0.0)
    norm_decay_mult: 1.0    # weight-decay multiplier for BatchNorm/GroupNorm/LayerNorm weights and biases
    base_batch_size: 16     # the batch the recipe's lr was tuned for
    auto_scale_lr: true     # lr *= total_batch / base_batch_size (linear scaling rule)
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from gfldet.config import Config, ConfigError, build_from_cfg

__all__ = ["OPTIMIZERS", "build_optimizer", "check_optimizer", "scaled_lr", "param_groups"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD,
    "AdamW": torch.optim.AdamW,
}
# Keys of the optimizer section consumed here rather than by the torch optimiser constructor.
_GROUP_KEYS = ("bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "base_batch_size", "auto_scale_lr")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def scaled_lr(lr: float, *, total_batch_size: int, base_batch_size: int, auto_scale: bool) -> float:
    """Linear scaling rule: ``lr * total_batch_size / base_batch_size`` when ``auto_scale``, else ``lr``."""
    if not auto_scale:
        return lr
    if total_batch_size <= 0 or base_batch_size <= 0:
        raise ValueError(f"batch sizes must be positive, got total={total_batch_size} base={base_batch_size}")
    return lr * total_batch_size / base_batch_size


def param_groups(model: nn.Module, *, lr: float, weight_decay: float, bias_lr_mult: float,
                 bias_decay_mult: float, norm_decay_mult: float) -> list[dict]:
    """Split the trainable parameters of ``model`` into groups with their own ``lr`` and ``weight_decay``.

    Norm-layer parameters (weight and bias) get ``weight_decay * norm_decay_mult``; biases of other layers get
    ``lr * bias_lr_mult`` and ``weight_decay * bias_decay_mult``; everything else the base values. Frozen parameters
    (``requires_grad=False``) are left out. Each group carries ``name`` ("base", "bias" or "norm") for logging.
    """
    buckets: dict[str, list[nn.Parameter]] = defaultdict(list)
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, _NORM_TYPES):
                buckets["norm"].append(param)
            elif name == "bias":
                buckets["bias"].append(param)
            else:
                buckets["base"].append(param)
    settings = {
        "base": (lr, weight_decay),
        "bias": (lr * bias_lr_mult, weight_decay * bias_decay_mult),
        "norm": (lr, weight_decay * norm_decay_mult),
    }
    return [{"params": buckets[key], "lr": settings[key][0], "weight_decay": settings[key][1], "name": key}
            for key in ("base", "bias", "norm") if buckets[key]]


def build_optimizer(model: nn.Module, cfg: Config, *, total_batch_size: int) -> torch.optim.Optimizer:
    """Build the optimiser of ``cfg`` (the ``optimizer`` section) for ``model``.

    ``total_batch_size`` = images per optimiser step over all processes (world_size x per-process batch).
    Wrong keys, types and values raise ConfigErrors naming file, line and key.
    """
    cfg = cfg if isinstance(cfg, Config) else Config(cfg, path="optimizer")
    missing = [key for key in ("lr", "weight_decay", *_GROUP_KEYS) if key not in cfg]
    if missing:
        raise ConfigError(f"{cfg.where()}: optimizer section is missing {', '.join(missing)} (defaults live in "
                          f"configs/_base_/schedules/schedule_1x.yaml; inherit it through _base_)")
    lr = scaled_lr(cfg.get_float("lr", positive=True), total_batch_size=total_batch_size,
                   base_batch_size=cfg.get_int("base_batch_size", low=1), auto_scale=cfg.get_bool("auto_scale_lr"))
    weight_decay = cfg.get_float("weight_decay", low=0)
    groups = param_groups(model, lr=lr, weight_decay=weight_decay, bias_lr_mult=cfg.get_float("bias_lr_mult", low=0),
                          bias_decay_mult=cfg.get_float("bias_decay_mult", low=0),
                          norm_decay_mult=cfg.get_float("norm_decay_mult", low=0))
    # lr / weight_decay go in scaled, as keyword arguments; the multipliers are ours, not the torch optimiser's.
    return build_from_cfg(cfg, OPTIMIZERS, where="optimizer", consumed=("lr", "weight_decay", *_GROUP_KEYS),
                          params=groups, lr=lr, weight_decay=weight_decay)


def check_optimizer(cfg: Config) -> None:
    """Validate the ``optimizer`` section before the data and the model are built: a build for a stand-in model."""
    build_optimizer(nn.Linear(1, 1), cfg, total_batch_size=1)
