"""Feature pyramid network producing P3..P7 from C3..C5, as in RetinaNet / ATSS / GFL.

torchvision's ``FeaturePyramidNetwork`` + ``LastLevelP6P7`` is not used: it applies a ReLU to P6 before the P7 conv
and names its parameters differently (``inner_blocks`` / ``layer_blocks``), so neither the numbers nor mmdetection
checkpoints would match. This module follows mmdetection's ``FPN(add_extra_convs='on_output')`` (GFL, ATSS, FCOS)
or ``'on_input'`` (RetinaNet, FoveaBox) with ``relu_before_extra_convs=False``; its parameter names
(``lateral_convs.i``, ``fpn_convs.i``) are mmdetection's without the ``.conv`` wrapper level.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FPN"]


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
