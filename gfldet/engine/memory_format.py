"""The memory format of training: ``train.channels_last`` = ``auto`` (default) | ``true`` | ``false``.

NHWC ("channels_last") weights make every convolution, and so every activation, NHWC. Whether that makes a
training step faster depends on the convolution kernels the machine has (figures in ``docs/benchmarks.md``):

- CPU with AVX-512 (AMD Zen 4): oneDNN has brgemm kernels for all three NHWC passes; R-50 steps take 0.98x
  (2x800x1333) and 0.87x (8x512x512) of NCHW's time in fp32, 0.87x in bf16 autocast.
- CPU with AVX2 only (AMD Zen 2): oneDNN computes NHWC weight gradients with a direct AVX2 kernel that is about
  4x slower than its blocked-NCHW one for a 3x3 256->256 convolution at P3 (2.2 s vs 0.57 s at 2x256x100x168);
  R-50 steps take 1.6x (2x800x1333) and 1.19x (8x512x512) of NCHW's time.
- CUDA (H200, cuDNN): NCHW steps were 1-3 % faster in fp32, fp16 and bf16 autocast (one run; within noise).

``auto`` therefore means NHWC on AVX-512 CPUs and NCHW elsewhere. Inference does not use this setting:
``optimize_for_inference`` makes the model NHWC, whose forward kernels are the faster ones on both CPUs, and on
AVX2 CPUs sends the neck's and head's 3x3 convolutions to NNPACK (``gfldet/models/winograd_conv.py``).
"""
from __future__ import annotations

import torch

from gfldet.config import ConfigError

__all__ = ["check_channels_last", "use_channels_last", "describe_channels_last"]


def check_channels_last(setting, *, where: str = "train.channels_last") -> None:
    """ConfigError (naming ``where``, e.g. file and line) unless ``setting`` is ``auto``, true or false."""
    if not (setting == "auto" or isinstance(setting, bool)):
        raise ConfigError(f"{where}: train.channels_last must be auto, true or false, got {setting!r}")


def use_channels_last(setting: str | bool, device: torch.device) -> bool:
    """Whether to train NHWC on ``device`` for a checked ``setting`` (``auto`` | True | False)."""
    if setting != "auto":
        return bool(setting)
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def describe_channels_last(setting: str | bool, device: torch.device) -> str:
    """One line for the log, e.g. ``channels_last: auto -> off (CPU capability AVX2)``."""
    chosen = "on" if use_channels_last(setting, device) else "off"
    if setting != "auto":
        return f"channels_last: {chosen}"
    reason = f"CPU capability {torch.backends.cpu.get_cpu_capability()}" if device.type == "cpu" else device.type
    return f"channels_last: auto -> {chosen} ({reason})"
