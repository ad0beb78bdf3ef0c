"""Stride-1 3x3 convolutions on NNPACK's Winograd kernels, for CPU inference and training, where those beat oneDNN.

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

so a convolution is sent to NNPACK from :data:`MIN_WORK` multiply-accumulates per kernel tap up. Its images are
stacked into one tall image, one NNPACK call: NNPACK's batched entry point runs its slower training algorithm (686
ms for two images at P3), and one call per image transforms the weights once per image (8x256x32x32, P4 of a
512x512 batch: 58 ms stacked, 96 ms image by image, 93 ms oneDNN). In training the input gradient, itself a 3x3
convolution, takes the same path (150 ms vs oneDNN's 299 ms for two images at P3), and the weight gradient, which
NNPACK cannot give through PyTorch, a Winograd algorithm of our own (:mod:`gfldet.models.winograd_weight_grad`: 121
vs 273 ms there) where it pays off, oneDNN elsewhere. NNPACK runs on its own thread pool, which competes for the
cores with oneDNN's where the two alternate (a ResNet's 1x1 and 3x3 convolutions): single-image inference was slower
with the backbone's convolutions swapped too, so ``optimize_for_inference`` swaps only the neck's and head's;
training steps (batches of 2 and 8) were faster with all of them swapped (``gfldet/engine/conv_kernels.py``,
``docs/benchmarks.md``).

Rounding: against a float64 reference, NNPACK's outputs are off by ~1.4e-5 of the output's largest magnitude,
direct convolution by ~1.5e-6 (a 256->256 3x3 layer at P3); both far below TF32's, which GPUs use for float32
convolutions by default.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from gfldet.models.winograd_weight_grad import conv3x3_weight_grad, winograd_weight_grad_pays_off

__all__ = ["MIN_WORK", "WinogradConv2d", "nnpack_available", "swap_in_winograd_convs", "winograd_pays_off"]

# Multiply-accumulates per kernel tap (C_in x C_out x N x H x W) from which NNPACK was faster than oneDNN (forward,
# 2 threads, Zen 2, batches stacked): every case measured at <= 1.4e8 was slower on NNPACK (64->64 at 8x64x64: 24
# vs 21 ms; 128->128 at 8x32x32: 17.5 vs 15.1; 256->256 at 8x16x16: 17 vs 15; at 2x25x42: 18 vs 14), every one
# at >= 2.7e8 faster (256->256 at 1x50x84: 34 vs 48-57 ms; 128->128 at 8x64x64 and 256->256 at 8x32x32: 41 vs 59;
# 64->64 at 2x200x336: 71 vs 82). Few channels leave the transforms too little arithmetic to amortise.
MIN_WORK = 2**28


@functools.cache
def nnpack_available() -> bool:
    """True when PyTorch was built with NNPACK and it initialises on this CPU (``is_available`` initialises it:
    without that call every NNPACK convolution fails)."""
    return torch.backends.nnpack.is_available()


def winograd_pays_off(device: torch.device) -> bool:
    """Whether :func:`swap_in_winograd_convs` speeds up inference and training on ``device``: a CPU whose best vector
    instructions are AVX2 (NNPACK's kernels; on AVX-512 CPUs oneDNN's kernels are faster than on AVX2 and the two
    were not compared), with NNPACK available."""
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability() == "AVX2" and nnpack_available()


class _NNPACKConv3x3(torch.autograd.Function):
    """A stride-1, padding-1 3x3 convolution whose forward and input gradient run on NNPACK (:func:`_stacked`).

    The input gradient of such a convolution is itself one: the output gradient convolved with the weights flipped
    in both spatial axes and with input and output channels swapped, so it takes the same fast kernels. The weight
    gradient (a correlation of input and output gradient over the batch) is Winograd's too where that pays off
    (:mod:`gfldet.models.winograd_weight_grad`: NNPACK's own kernel-gradient routine is not exposed by PyTorch);
    otherwise it goes, with the bias gradient, to oneDNN through ``aten.convolution_backward``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _stacked(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_output = grad_output.contiguous()
        needs_input, needs_weight, needs_bias = ctx.needs_input_grad
        needs_bias = ctx.has_bias and needs_bias
        grad_input = grad_weight = grad_bias = None
        if needs_input:
            grad_input = _stacked(grad_output, weight.flip(2, 3).transpose(0, 1).contiguous(), None)
        if needs_weight and winograd_weight_grad_pays_off(x.shape[1], weight.shape[0], *x.shape[2:]):
            grad_weight = conv3x3_weight_grad(x, grad_output)
            grad_bias = grad_output.sum((0, 2, 3)) if needs_bias else None
        elif needs_weight or needs_bias:
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad_output, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], [1, 1], [1, 1], False,
                [0, 0], 1, [False, needs_weight, needs_bias])
        return grad_input, grad_weight, grad_bias


def _stacked(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """NNPACK's convolution of the images of ``x`` (N, C, H, W), NCHW out, in one call: the images are stacked
    into one tall image (1, C, N * (H + 1), W) with a zero row under each, which is exactly the zero padding a
    3x3 convolution sees at an image's border, so no output mixes two images; the outputs on the separator rows
    are dropped. NNPACK's batched entry point runs its slower algorithm, and one call per image would transform
    the weights N times (module docstring)."""
    if len(x) == 1:
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [1, 1], [1, 1])
    num_images, channels, height, width = x.shape
    tall = x.new_empty(channels, num_images, height + 1, width)
    tall[:, :, height] = 0
    tall[:, :, :height] = x.transpose(0, 1)
    out = torch._nnpack_spatial_convolution(tall.view(1, channels, -1, width), weight, bias, [1, 1], [1, 1])
    return out.view(-1, num_images, height + 1, width)[:, :, :height].transpose(0, 1).contiguous()


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1, padding 1, no dilation, one group) whose float32 CPU forward and input
    gradient run on NNPACK from :data:`MIN_WORK` multiply-accumulates per kernel tap up, with NCHW output
    (the weight gradient on :func:`~gfldet.models.winograd_weight_grad.conv3x3_weight_grad` where that pays off,
    on oneDNN otherwise). Everything else runs the ordinary convolution: small maps, GPUs, autocast, float64,
    tracing (ONNX / TorchScript export) and ``torch.compile``."""

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
        # .contiguous(): a no-op unless the model was made channels_last after the swap
        return _NNPACKConv3x3.apply(x, self.weight.contiguous(), self.bias)

    def _runs_on_nnpack(self, x: torch.Tensor) -> bool:
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return False
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return False
        if not nnpack_available() or torch.is_autocast_enabled("cpu"):
            return False
        return self.in_channels * self.out_channels * x.shape[0] * x.shape[-2] * x.shape[-1] >= MIN_WORK


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
