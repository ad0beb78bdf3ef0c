"""Mixed precision modes: ``off`` (fp32), ``fp16`` (autocast + GradScaler), ``bf16`` (autocast, no scaler)."""
from __future__ import annotations

import contextlib

import torch

from gfldet.errors import GfldetError

__all__ = ["AMP_MODES", "check_amp_mode", "autocast", "make_grad_scaler"]

AMP_MODES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_amp_mode(mode: str | bool) -> str:
    """``mode`` if it is one of AMP_MODES; False (YAML 1.1 reads an unquoted ``off``, e.g. ``--amp off``, as false)
    is ``off``."""
    mode = "off" if mode is False else mode
    if mode not in AMP_MODES:
        raise GfldetError(f"train.amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    return mode


def autocast(device: torch.device, mode: str):
    """The autocast context for ``mode`` on ``device`` (a no-op context for ``off``)."""
    dtype = AMP_MODES[check_amp_mode(mode)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, mode: str) -> torch.amp.GradScaler:
    """A GradScaler enabled only for fp16 (bf16 has fp32's exponent range and needs no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=check_amp_mode(mode) == "fp16")
