"""Stride-1 3x3 convolutions of CPU inference on NNPACK's Winograd kernels, where those beat oneDNN.

Winograd's F(6x6, 3x3) algorithm computes a stride-1 3x3 convolution with 5.1x fewer multiplications than the
direct one. oneDNN, PyTorch's CPU convolution backend, has no Winograd kernel for these CPUs; NNPACK, which PyTorch
bundles, has AVX2 ones, reachable through ``torch._nnpack_spatial_convolution`` (PyTorch picks them itself only in
configurations it rarely meets); no maintained library offers another way, hence this module. Measured on an
AVX2-only AMD EPYC (Zen 2), 2 threads, one image, against oneDNN NCHW / NHWC:

    256->256 at 100x168 (P3 of 800x1333)   84 ms vs 200 / 200 ms
    256->256 at  50x84  (P4, layer3)       34 ms vs  57 / 48 ms
    128->128 at 100x168 (layer2)           30 ms vs  57 / 44 ms
    256->256 at  25x42  (P5)               14 ms vs  13 / 14 ms
    256->256 at  13x21  (P6)               10 ms vs   5 / 5 ms

so a map is sent to NNPACK from :data:`MIN_POSITIONS` output positions up. A batch goes image by image: NNPACK's
batched entry point runs its slower training algorithm (686 ms for two images at P3). NNPACK runs on its own
thread pool: interleaved with oneDNN's 1x1 convolutions (a ResNet's bottlenecks) the two pools compete for the
cores, so ``optimize_for_inference`` swaps only the neck's and head's convolutions (``docs/benchmarks.md``).

Rounding: against a float64 reference, NNPACK's outputs are off by ~1.4e-5 of the output's largest magnitude,
direct convolution by ~1.5e-6 (a 256->256 3x3 layer at P3); both far below TF32's, which GPUs use for float32
convolutions by default.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["MIN_POSITIONS", "WinogradConv2d", "nnpack_available", "swap_in_winograd_convs", "winograd_pays_off"]

# Output positions (H x W) from which NNPACK was faster than oneDNN in the table above (between 25x42 and 50x84).
MIN_POSITIONS = 4096


@functools.cache
def nnpack_available() -> bool:
    """True when PyTorch was built with NNPACK and it initialises on this CPU (``is_available`` initialises it:
    without that call every NNPACK convolution fails)."""
    return torch.backends.nnpack.is_available()


def winograd_pays_off(device: torch.device) -> bool:
    """Whether :func:`swap_in_winograd_convs` speeds up inference on ``device``: a CPU whose best vector
    instructions are AVX2 (NNPACK's kernels; on AVX-512 CPUs oneDNN's kernels are faster than on AVX2 and the two
    were not compared), with NNPACK available."""
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability() == "AVX2" and nnpack_available()


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1, padding 1, no dilation, one group) whose float32 CPU inference on maps of at
    least :data:`MIN_POSITIONS` positions runs on NNPACK, one image at a time, with NCHW output. Everything else
    runs the ordinary convolution: small maps, GPUs, autocast, gradients, tracing (ONNX / TorchScript export) and
    ``torch.compile``."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "WinogradConv2d":
        """The same layer, sharing ``conv``'s parameters (weights made NCHW-contiguous, as NNPACK reads them)."""
        swapped = cls.__new__(cls)
        swapped.__dict__.update(conv.__dict__)
        swapped.weight.data = swapped.weight.data.contiguous()
        return swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._runs_on_nnpack(x):
            return super().forward(x)
        weight = self.weight.contiguous()  # a no-op unless the model was made channels_last after the swap
        outputs = [torch._nnpack_spatial_convolution(image.contiguous(), weight, self.bias, self.padding, self.stride)
                   for image in x.split(1)]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _runs_on_nnpack(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return False
        if not nnpack_available():
            return False
        if x.shape[-2] * x.shape[-1] < MIN_POSITIONS or torch.is_autocast_enabled("cpu"):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return False
        return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())


def _eligible(conv: nn.Module) -> bool:
    # exact type only: subclasses (deformable convs, weight-standardised convs) compute something else
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def swap_in_winograd_convs(model: nn.Module) -> int:
    """Replace every eligible ``nn.Conv2d`` of ``model`` by a :class:`WinogradConv2d` sharing its parameters, in
    place; returns how many. Eligible: exactly ``nn.Conv2d``, 3x3, stride 1, padding 1, no dilation, one group."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _eligible(child):
                setattr(parent, name, WinogradConv2d.from_conv(child))
                swapped += 1
    return swapped
