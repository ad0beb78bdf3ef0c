"""Necks: the feature pyramid network producing P3..P7 from C3..C5 (RetinaNet / ATSS / GFL), and SSD's extra layers.

torchvision's ``FeaturePyramidNetwork`` + ``LastLevelP6P7`` is not used: it applies a ReLU to P6 before the P7 conv
and names its parameters differently (``inner_blocks`` / ``layer_blocks``), so neither the numbers nor mmdetection
checkpoints would match. This module follows mmdetection's ``FPN(add_extra_convs='on_output')`` (GFL, ATSS, FCOS)
or ``'on_input'`` (RetinaNet, FoveaBox) with ``relu_before_extra_convs=False``; its parameter names
(``lateral_convs.i``, ``fpn_convs.i``) are mmdetection's without the ``.conv`` wrapper level.

``SSDNeck`` follows mmdetection's ``SSDNeck`` (L2Norm on the first input, then per extra level a 1x1 and a 3x3 conv,
each followed by a ReLU); its parameter names are mmdetection's without the ``.conv`` wrapper level too
(``extra_layers.i.j.weight`` <- ``extra_layers.i.j.conv.weight``; ``l2_norm.weight`` unchanged).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FPN", "SSDNeck", "L2Norm"]


class FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling + add, 3x3 output convs, then extra 3x3 stride-2 convs.

    Outputs ``num_outs`` maps: one per input level, then ``num_outs - len(in_channels)`` extra levels; the first
    extra conv reads the last output (``extra_convs_on: output``, P5 -> P6) or the last input (``input``, C5 -> P6),
    each next one the previous extra level (P6 -> P7), with no activation in between. All convs: Xavier-uniform
    weights, zero bias.
    """

    def __init__(self, *, in_channels: Sequence[int], in_strides: Sequence[int], out_channels: int = 256,
                 num_outs: int = 5, extra_convs_on: str = "output") -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs: {num_outs} is smaller than the number of inputs ({len(in_channels)})")
        if extra_convs_on not in ("output", "input"):
            raise ValueError(f"extra_convs_on: expected 'output' or 'input', got {extra_convs_on!r}")
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        num_extra = num_outs - len(in_channels)
        extra_in = [in_channels[-1] if extra_convs_on == "input" else out_channels] + [out_channels] * (num_extra - 1)
        self.fpn_convs = nn.ModuleList(
            [nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels]
            + [nn.Conv2d(c, out_channels, 3, stride=2, padding=1) for c in extra_in[:num_extra]]
        )
        self.extra_convs_on = extra_convs_on
        self.num_inputs = len(in_channels)
        self.out_channels = [out_channels] * num_outs
        self.strides = list(in_strides) + [in_strides[-1] * 2 ** (i + 1) for i in range(num_extra)]
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """feats: C levels [N, in_channels[i], Hi, Wi] -> num_outs maps [N, out_channels, Hl, Wl] (P3..P7)."""
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        source = feats[-1] if self.extra_convs_on == "input" else outs[-1]
        for conv in self.fpn_convs[self.num_inputs:]:
            source = conv(source)
            outs.append(source)
        return outs


class L2Norm(nn.Module):
    """SSD's L2 normalisation across channels with a learned per-channel scale (mmdetection's ``L2Norm``).

    ``y[n, c, h, w] = weight[c] * x[n, c, h, w] / (sqrt(sum_c' x[n, c', h, w]^2) + eps)``, computed in float32 (also
    for float16 / bfloat16 inputs, returned in the input's dtype); ``weight`` starts at ``scale`` for every channel.
    """

    def __init__(self, *, num_channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels: {num_channels} must be positive")
        self.scale, self.eps = float(scale), eps
        self.weight = nn.Parameter(torch.full((num_channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] -> [N, C, H, W], each pixel's channel vector with L2 norm ``weight`` (per channel)."""
        x_float = x.float()
        norm = x_float.pow(2).sum(1, keepdim=True).sqrt() + self.eps
        return (self.weight[None, :, None, None].float() * x_float / norm).type_as(x)


class SSDNeck(nn.Module):
    """SSD's extra feature layers: the inputs (the first one L2-normalised), then one new level per extra layer.

    Outputs ``len(out_channels)`` maps: the ``len(in_channels)`` inputs (``out_channels`` must start with
    ``in_channels``), the first one through :class:`L2Norm` unless ``l2_norm_scale`` is 0, then per extra level ``i``
    a 1x1 conv to ``out_channels[k] // 2`` channels + ReLU and a 3x3 conv (the last level: ``last_kernel_size``) to
    ``out_channels[k]`` channels with ``level_strides[i]`` / ``level_paddings[i]`` + ReLU, each reading the previous
    level (the first one the last input). All convs: Xavier-uniform weights, zero bias (mmdetection's init).

    ``strides``: the nominal pixel stride of every output level, which the priors use (the inputs' ones first: they
    must equal ``in_strides``). The extra levels' real strides follow from the input size and are not always powers
    of two, so the config states them: SSD512 [8, 16, 32, 64, 128, 256, 512], SSD300 [8, 16, 32, 64, 100, 300].
    """

    def __init__(self, *, in_channels: Sequence[int], in_strides: Sequence[int], out_channels: Sequence[int],
                 level_strides: Sequence[int], level_paddings: Sequence[int], strides: Sequence[int],
                 l2_norm_scale: float = 20.0, last_kernel_size: int = 3) -> None:
        super().__init__()
        in_channels, out_channels = list(in_channels), list(out_channels)
        num_in, num_extra = len(in_channels), len(out_channels) - len(in_channels)
        if len(in_strides) != num_in:
            raise ValueError(f"in_strides: {list(in_strides)} has {len(in_strides)} entries for {num_in} inputs")
        if num_extra < 1 or out_channels[:num_in] != in_channels:
            raise ValueError(f"out_channels: {out_channels} must start with the input channels {in_channels} and "
                             "add at least one extra level")
        if min(out_channels) < 1:
            raise ValueError(f"out_channels: {out_channels} must be positive")
        if len(level_strides) != num_extra or min(level_strides) < 1:
            raise ValueError(f"level_strides: {list(level_strides)} must hold {num_extra} positive strides, one per "
                             "extra level")
        if len(level_paddings) != num_extra or min(level_paddings) < 0:
            raise ValueError(f"level_paddings: {list(level_paddings)} must hold {num_extra} paddings >= 0, one per "
                             "extra level")
        if last_kernel_size < 1:
            raise ValueError(f"last_kernel_size: {last_kernel_size} must be positive")
        if l2_norm_scale < 0:
            raise ValueError(f"l2_norm_scale: {l2_norm_scale} must be >= 0 (0: no L2Norm)")
        if len(strides) != len(out_channels) or list(strides[:num_in]) != list(in_strides) or min(strides) < 1:
            raise ValueError(f"strides: {list(strides)} must give one positive stride per output level "
                             f"({len(out_channels)}), starting with the input strides {list(in_strides)}")
        self.l2_norm = L2Norm(num_channels=in_channels[0], scale=l2_norm_scale) if l2_norm_scale else None
        self.extra_layers = nn.ModuleList()
        for i, (channels, stride, padding) in enumerate(zip(out_channels[num_in:], level_strides, level_paddings)):
            kernel_size = last_kernel_size if i == num_extra - 1 else 3
            self.extra_layers.append(nn.ModuleList([
                nn.Conv2d(out_channels[num_in - 1 + i], channels // 2, 1),
                nn.Conv2d(channels // 2, channels, kernel_size, stride=stride, padding=padding),
            ]))
        for conv in self.extra_layers.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)
        self.out_channels = out_channels
        self.strides = list(strides)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """feats: inputs [N, in_channels[i], Hi, Wi] -> len(out_channels) maps [N, out_channels[l], Hl, Wl].

        Extra level sizes: ``(H + 2 * padding - kernel) // stride + 1`` from the previous level (SSD512 from 64x64 /
        32x32 inputs: 16, 8, 4, 2, 1; SSD300 from 38 / 19: 10, 5, 3, 1).
        """
        outs = list(feats)
        if self.l2_norm is not None:
            outs[0] = self.l2_norm(outs[0])
        feat = outs[-1]
        for conv1x1, conv in self.extra_layers:
            feat = F.relu(conv(F.relu(conv1x1(feat), inplace=True)), inplace=True)
            outs.append(feat)
        return outs
