"""How training's convolutions run on this machine: ``train.channels_last`` and ``train.winograd``, each ``auto``
(default) | ``true`` | ``false``.

Both choose kernels, and which ones are fast depends on the machine (figures in ``docs/benchmarks.md``):

``channels_last``: NHWC weights make every convolution, and so every activation, NHWC.

- CPU with AVX-512 (AMD Zen 4): oneDNN has brgemm kernels for all three NHWC passes; R-50 steps take 0.98x
  (2x800x1333) and 0.87x (8x512x512) of NCHW's time in fp32, 0.87x in bf16 autocast.
- CPU with AVX2 only (AMD Zen 2): oneDNN computes NHWC weight gradients with a direct AVX2 kernel that is about
  4x slower than its blocked-NCHW one for a 3x3 256->256 convolution at P3 (2.2 s vs 0.57 s at 2x256x100x168);
  R-50 steps take 1.6x (2x800x1333) and 1.19x (8x512x512) of NCHW's time.
- CUDA (H200, cuDNN): NCHW steps were 1-3 % faster in fp32, fp16 and bf16 autocast (one run; within noise).

``auto`` means NHWC on AVX-512 CPUs and NCHW elsewhere.

``winograd``: every stride-1 3x3 convolution (backbone, neck, head) computes its forward and input gradient on
large float32 CPU maps with NNPACK's Winograd kernels (``gfldet/models/winograd_conv.py``), and where it pays off
its weight gradient with our own Winograd algorithm (``gfldet/models/winograd_weight_grad.py``); ``auto`` means
where those beat oneDNN's: AVX2 CPUs (on a Zen 2: R-50 training steps at 2x800x1333 and 8x512x512 in about 0.70x
of the direct convolutions' time). A layer takes the ordinary convolution wherever NNPACK does not apply (GPUs,
autocast, ``torch.compile``, small maps), so ``true`` is harmless there.

Inference does not use these settings: ``optimize_for_inference`` makes the model NHWC, whose forward kernels are
the faster ones on both CPUs, and on AVX2 CPUs swaps the neck's and head's convolutions only.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from gfldet.config import Config, ConfigError
from gfldet.models.winograd_conv import swap_in_winograd_convs, winograd_pays_off

__all__ = ["check_conv_settings", "chosen_conv_kernels", "describe_conv_kernels", "prepare_for_training",
           "use_channels_last", "use_winograd"]

SETTINGS = ("channels_last", "winograd")


def check_conv_settings(tcfg: Config) -> None:
    """ConfigError naming file and line unless ``train.channels_last`` and ``train.winograd`` (both optional,
    default auto) are auto, true or false."""
    for key in SETTINGS:
        setting = tcfg.get(key, "auto")
        if not (setting == "auto" or isinstance(setting, bool)):
            raise ConfigError(f"{tcfg.where(key)}: train.{key} must be auto, true or false, got {setting!r}")


def use_channels_last(setting: str | bool, device: torch.device) -> bool:
    """Whether to train NHWC on ``device`` for a checked ``setting`` (``auto`` | True | False)."""
    if setting != "auto":
        return bool(setting)
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def use_winograd(setting: str | bool, device: torch.device) -> bool:
    """Whether to train with Winograd convolutions on ``device`` for a checked ``setting``."""
    return winograd_pays_off(device) if setting == "auto" else bool(setting)


def chosen_conv_kernels(tcfg: Mapping, device: torch.device) -> dict[str, bool]:
    """``{"channels_last": bool, "winograd": bool}`` for a checked ``train`` section (a missing key is auto)."""
    return {"channels_last": use_channels_last(tcfg.get("channels_last", "auto"), device),
            "winograd": use_winograd(tcfg.get("winograd", "auto"), device)}


def prepare_for_training(model: nn.Module, *, channels_last: bool, winograd: bool) -> nn.Module:
    """``model`` (a detector) in place: NHWC weights when ``channels_last`` (every activation follows), every
    stride-1 3x3 convolution swapped for a Winograd one when ``winograd``; returns it."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if winograd:
        swap_in_winograd_convs(model)
    return model


def describe_conv_kernels(tcfg: Config, device: torch.device) -> str:
    """One line for the log, e.g. ``channels_last: auto -> off, winograd: auto -> on (CPU capability AVX2)``."""
    settings = {key: tcfg.get(key, "auto") for key in SETTINGS}
    chosen = chosen_conv_kernels(tcfg, device)
    parts = [f"{key}: {'auto -> ' if settings[key] == 'auto' else ''}{'on' if chosen[key] else 'off'}"
             for key in SETTINGS]
    if "auto" not in settings.values():
        return ", ".join(parts)
    reason = f"CPU capability {torch.backends.cpu.get_cpu_capability()}" if device.type == "cpu" else device.type
    return f"{', '.join(parts)} ({reason})"
