"""SSD's VGG16 backbone, as mmdetection's ``SSDVGG(depth=16, with_last_pool=False, out_feature_indices=(22, 34))``.

VGG16's convolutional layers (torchvision's ``vgg16().features`` built by ``torchvision.models.vgg.make_layers``,
without its last max-pool), then SSD's "reduced fc" layers: pool5 (3x3, stride 1, padding 1), conv6 (3x3, dilation 6,
padding 6, 1024 channels) + ReLU, conv7 (1x1, 1024 channels) + ReLU. Outputs conv4_3 after its ReLU
(``features.22``: 512 channels, stride 8) and conv7 after its ReLU (``features.34``: 1024 channels, stride 16).

Parameter names are ``features.<index>.{weight,bias}`` with mmdetection's indices (0..28: torchvision's VGG16 convs,
31: conv6, 33: conv7), so the ``backbone.*`` keys of mmdetection SSD checkpoints load unchanged. Invalid arguments and
unusable weights raise ValueError naming the argument; ``build_detector`` adds the config file and line.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import vgg as tv_vgg

from gfldet.models.backbones import download_torchvision_weights, load_matching_state_dict, load_pretrained_state_dict

__all__ = ["SSDVGG"]

# exclusive end index in ``features`` of each VGG16 stage (conv+ReLU pairs, then a max-pool; stage 4 without it),
# mmcv's ``VGG.range_sub_modules`` for depth 16 and with_last_pool=False
_STAGE_ENDS = (5, 10, 17, 24, 30)
_OUT_FEATURE_INDICES = (22, 34)  # ReLU after conv4_3, ReLU after conv7
_CONV6, _CONV7 = 31, 33  # not in ImageNet VGG16 weights (SSD's reduced fc6 / fc7)


class SSDVGG(nn.Module):
    """VGG16 + pool5 / conv6 / conv7: ``images [N, 3, H, W]`` -> [conv4_3, conv7] at strides [8, 16].

    ``ceil_mode``: max-pools round their output size up (mmdetection's SSD: True), so the outputs are
    ``ceil(H / 8) x ceil(W / 8)`` and ``ceil(H / 16) x ceil(W / 16)`` (SSD300: 38 and 19; SSD512: 64 and 32).
    With False they round down (300 -> 37 and 18).

    ``pretrained``:

    * False: random init as mmdetection's SSDVGG without pretrained weights (its ``init_cfg`` Kaiming on Conv2d):
      every conv ``kaiming_normal_(mode='fan_out', nonlinearity='relu')``, zero bias.
    * True or "torchvision": torchvision's ``VGG16_Weights.IMAGENET1K_FEATURES`` (the caffe-converted VGG16 of
      amdegroot's ssd.pytorch, which torchvision's own ``ssd300_vgg16`` starts from), downloaded into the torch hub
      cache (error offline). They fill ``features.0..28``; they expect RGB inputs on the 0-255 scale minus
      ``[123.0, 117.0, 104.0]`` with std 1 (torchvision's meta: mean (0.48235, 0.45882, 0.40784), std 1/255 on the
      0-1 scale), not the ImageNet mean/std of torchvision's other weights. mmdetection's SSD configs start instead
      from open-mmlab's ``vgg16_caffe`` (``open-mmlab://vgg16_caffe``, fed RGB 0-255 minus
      [123.675, 116.28, 103.53], std 1); give that file's path to use it.
    * a path: a local state dict with ``features.<index>.*`` keys (torchvision VGG16, open-mmlab's vgg16_caffe, or
      an mmdetection SSD backbone; ``backbone.``-prefixed keys are taken with the prefix stripped and other keys of
      such a file ignored; ``classifier.*`` is ignored).

    Weights without conv6 / conv7 (torchvision's) leave those two at PyTorch's default Conv2d init, which is what
    mmdetection's non-strict ``Pretrained`` loading would do with such a file; its own ``vgg16_caffe`` has them
    (converted fc6 / fc7), so with torchvision's weights SSD512 starts from a different point than mmdetection's.
    ``frozen_stages = k`` (mmcv VGG's semantics, which mmdetection's SSDVGG does not expose) stops the gradients of
    the parameters of VGG stages 0..k-1 (conv1_x .. conv{k}_x); -1 or 0 freezes nothing. There is no BatchNorm.
    """

    def __init__(self, *, ceil_mode: bool = True, pretrained: bool | str = False, frozen_stages: int = -1) -> None:
        super().__init__()
        if not -1 <= frozen_stages <= len(_STAGE_ENDS):
            raise ValueError(f"frozen_stages: {frozen_stages} must be in -1..{len(_STAGE_ENDS)}")
        layers = list(tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False))[:-1]  # VGG16 without its last pool
        for layer in layers:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = ceil_mode
        layers += [
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),  # pool5
            nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),  # conv6 (fc6, atrous)
            nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, kernel_size=1),  # conv7 (fc7)
            nn.ReLU(inplace=True),
        ]
        self.features = nn.Sequential(*layers)
        self.ceil_mode = ceil_mode
        self.out_channels = [512, 1024]
        self.strides = [8, 16]
        if pretrained is False or pretrained is None:
            self._init_weights()
        else:
            self._load_pretrained(pretrained)
        self.frozen_stages = frozen_stages
        if frozen_stages > 0:
            for param in self.features[: _STAGE_ENDS[frozen_stages - 1]].parameters():
                param.requires_grad_(False)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def _load_pretrained(self, pretrained: bool | str) -> None:
        what = "pretrained (SSDVGG)"
        if pretrained is True or pretrained == "torchvision":
            state = download_torchvision_weights(tv_vgg.VGG16_Weights.IMAGENET1K_FEATURES, what=what)
        else:
            state = load_pretrained_state_dict(pretrained, what=what)
        if any(k.startswith("backbone.") for k in state):  # a detector checkpoint: its backbone part
            state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        optional = {f"features.{i}.{leaf}" for i in (_CONV6, _CONV7) for leaf in ("weight", "bias")}
        load_matching_state_dict(self, state, optional=optional, what=what)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [N, 3, H, W] -> [conv4_3 [N, 512, H/8, W/8], conv7 [N, 1024, H/16, W/16]] (ceil with ceil_mode)."""
        outs = []
        x = images
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _OUT_FEATURE_INDICES:
                outs.append(x)
        return outs
