"""Backbones: torchvision ResNet / ResNeXt with mmdetection's freezing semantics, and any timm ``features_only`` model.

Every backbone maps ``images [N, 3, H, W]`` to a list of feature maps and publishes, per output,
``out_channels`` (list[int]) and ``strides`` (list[int], pixels per feature cell), so that necks wire themselves.

Stage numbering follows mmdetection: stage 0..3 = torchvision's ``layer1..layer4`` = C2..C5 (strides 4..32).
Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv2`` ...), which are also mmdetection's.
Invalid arguments and unusable weights raise ValueError naming the argument; ``build_detector`` adds the config file
and line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence
from urllib.error import URLError

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops import deform_conv2d

__all__ = ["ResNet", "TimmBackbone", "DeformConv2d", "download_torchvision_weights", "load_pretrained_state_dict",
           "load_matching_state_dict"]

# depth -> (block, blocks per stage)
_RESNET_ARCHS = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
    152: (tv_resnet.Bottleneck, [3, 8, 36, 3]),
}
# (depth, groups, width_per_group) -> torchvision ImageNet weights (V1 = mmdetection's ``torchvision://resnetXX``)
_TORCHVISION_WEIGHTS = {
    (18, 1, 64): tv_resnet.ResNet18_Weights.IMAGENET1K_V1,
    (34, 1, 64): tv_resnet.ResNet34_Weights.IMAGENET1K_V1,
    (50, 1, 64): tv_resnet.ResNet50_Weights.IMAGENET1K_V1,
    (101, 1, 64): tv_resnet.ResNet101_Weights.IMAGENET1K_V1,
    (152, 1, 64): tv_resnet.ResNet152_Weights.IMAGENET1K_V1,
    (50, 32, 4): tv_resnet.ResNeXt50_32X4D_Weights.IMAGENET1K_V1,
    (101, 32, 8): tv_resnet.ResNeXt101_32X8D_Weights.IMAGENET1K_V1,
    (101, 64, 4): tv_resnet.ResNeXt101_64X4D_Weights.IMAGENET1K_V1,
}
# where the reference configs take ImageNet weights that torchvision does not have (a hint in the error)
_OTHER_IMAGENET_WEIGHTS = {
    (101, 32, 4): (" (mmdetection's GFL X-101-32x4d starts from open-mmlab's resnext101_32x4d-a5af3160.pth, "
                   "https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-a5af3160.pth)"),
}
_STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
_STAGE_STRIDES = (4, 8, 16, 32)


class DeformConv2d(nn.Module):
    """Deformable 3x3 conv (DCNv1, or DCNv2 when ``modulated``) on ``torchvision.ops.deform_conv2d``.

    Parameter names follow mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack`` (``weight``,
    ``conv_offset.{weight,bias}``) so that mmdetection DCN checkpoints load unchanged: ``conv_offset`` predicts
    2*k*k offsets ((dy, dx) per kernel point, the layout torchvision shares with mmcv), followed for DCNv2 by k*k
    mask logits. It starts at zero: a plain conv at init (DCNv2: scaled by sigmoid(0) = 0.5, as in mmcv).
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, groups: int = 1, modulated: bool = False) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.modulated = stride, padding, dilation, modulated
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.num_offsets = 2 * kernel_size * kernel_size
        num_outputs = self.num_offsets + (kernel_size * kernel_size if modulated else 0)
        self.conv_offset = nn.Conv2d(in_channels, num_outputs, kernel_size, stride=stride, padding=padding,
                                     dilation=dilation)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C_in, H, W] -> [N, C_out, H', W']."""
        out = self.conv_offset(x)
        offset, mask = out[:, : self.num_offsets], None
        if self.modulated:
            mask = out[:, self.num_offsets:].sigmoid()
        return deform_conv2d(x, offset, self.weight, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)


def load_pretrained_state_dict(path: str | Path, *, what: str) -> dict[str, torch.Tensor]:
    """Read a local weights file (.pth/.pt state dict, optionally wrapped in 'state_dict' or 'model')."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{what}: pretrained weights file '{path}' does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a tensor-only torch file: say which file and why
        raise ValueError(f"{what}: cannot read '{path}' as a state dict of tensors: {err}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    return obj


def load_matching_state_dict(module: nn.Module, state: dict[str, torch.Tensor], *, optional: set[str],
                             what: str) -> None:
    """Load ``state`` into ``module``: every key of the module except ``optional`` ones (layers ImageNet weights do
    not have, e.g. DCN offsets) must be there, no other key, same shapes; ValueError naming ``what`` otherwise."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{what}: pretrained weights do not match the architecture: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} ({len(missing)} / {len(unexpected)} keys)")
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{what}: pretrained weights do not match the architecture: {err}") from None


def download_torchvision_weights(weights, *, what: str) -> dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (URLError, OSError, RuntimeError) as err:
        hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
        raise ValueError(
            f"{what}: cannot fetch torchvision ImageNet weights {weights} ({err}). Offline? Download {weights.url} "
            f"on a connected machine, then either put it in {hub_dir}/ or set backbone.pretrained to its local path"
        ) from None


class ResNet(nn.Module):
    """torchvision ResNet / ResNeXt trunk returning the stages in ``out_indices`` (0..3 = C2..C5).

    "pytorch" style: torchvision's Bottleneck strides in its 3x3 conv, as mmdetection's ``style='pytorch'``.
    ``frozen_stages = k`` freezes the stem and stages 0..k-1 (parameters without grad, BN in eval), -1 freezes nothing.
    ``norm_eval`` keeps every BatchNorm in eval mode (running statistics frozen) while the affine parameters of the
    unfrozen stages still train, as mmdetection does; torchvision's FrozenBatchNorm2d would also freeze those affine
    parameters, so it is not used.
    ``pretrained``: False; True or "torchvision" (ImageNet weights through torchvision, downloaded into the torch hub
    cache, error offline); or the path of a local state dict (torchvision key names; ``fc.*`` is ignored).
    ``dcn_stages``: stages whose 3x3 convs become deformable convs (mmdetection's ``stage_with_dcn``); DCNv1 as in
    the GFL model zoo (mmdetection ``type='DCN'``), DCNv2 with ``dcn_modulated``.
    """

    def __init__(self, *, depth: int = 50, groups: int = 1, width_per_group: int = 64,
                 out_indices: Sequence[int] = (1, 2, 3), frozen_stages: int = 1, norm_eval: bool = True,
                 pretrained: bool | str = False, dcn_stages: Sequence[int] = (), dcn_modulated: bool = False) -> None:
        super().__init__()
        if depth not in _RESNET_ARCHS:
            raise ValueError(f"depth: {depth} is not one of {sorted(_RESNET_ARCHS)}")
        if not out_indices or not set(out_indices) <= {0, 1, 2, 3} or list(out_indices) != sorted(out_indices):
            raise ValueError(f"out_indices: {list(out_indices)} must be increasing stage indices in 0..3")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages: {frozen_stages} must be in -1..4")
        block, layers = _RESNET_ARCHS[depth]
        net = tv_resnet.ResNet(block, layers, groups=groups, width_per_group=width_per_group)
        self.depth, self.groups, self.width_per_group = depth, groups, width_per_group
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.num_stages = max(out_indices) + 1
        for name in _STAGE_NAMES[: self.num_stages]:
            setattr(self, name, getattr(net, name))
        self.out_indices = list(out_indices)
        self.out_channels = [_stage_out_channels(self._stage(i)) for i in self.out_indices]
        self.strides = [_STAGE_STRIDES[i] for i in self.out_indices]
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        self._add_dcn(dcn_stages, modulated=dcn_modulated)
        self._load_pretrained(pretrained)
        self._freeze_stages()

    def _stage(self, index: int) -> nn.Sequential:
        return getattr(self, _STAGE_NAMES[index])

    def _add_dcn(self, dcn_stages: Sequence[int], *, modulated: bool) -> None:
        for index in dcn_stages:
            if not 0 <= index < self.num_stages:
                raise ValueError(f"dcn_stages: stage {index} is not in 0..{self.num_stages - 1}")
            for blk in self._stage(index):
                conv = blk.conv2
                blk.conv2 = DeformConv2d(conv.in_channels, conv.out_channels, stride=conv.stride[0],
                                         padding=conv.padding[0], dilation=conv.dilation[0], groups=conv.groups,
                                         modulated=modulated)

    def _load_pretrained(self, pretrained: bool | str) -> None:
        what = f"pretrained (ResNet depth {self.depth}, {self.groups}x{self.width_per_group}d)"
        if pretrained is False or pretrained is None:
            return
        if pretrained is True or pretrained == "torchvision":
            weights = _TORCHVISION_WEIGHTS.get((self.depth, self.groups, self.width_per_group))
            if weights is None:
                hint = _OTHER_IMAGENET_WEIGHTS.get((self.depth, self.groups, self.width_per_group), "")
                raise ValueError(f"{what}: torchvision has no ImageNet weights for this architecture; set "
                                  f"backbone.pretrained to the path of a local state dict{hint}")
            state = download_torchvision_weights(weights, what=what)
        else:
            state = load_pretrained_state_dict(pretrained, what=what)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.state_dict()
        state = {k: v for k, v in state.items() if k.split(".")[0] not in _STAGE_NAMES[self.num_stages:]}
        load_matching_state_dict(self, state, optional={k for k in own if "conv_offset" in k}, what=what)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.conv1, self.bn1] + [self._stage(i) for i in range(min(self.frozen_stages, self.num_stages))]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        """Train mode, except for the frozen stages and (with ``norm_eval``) every BatchNorm."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            _batchnorm_eval(self)
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [N, 3, H, W] -> [N, out_channels[i], H / strides[i], W / strides[i]] (ceil) per out index."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        outs = []
        for index in range(self.num_stages):
            x = self._stage(index)(x)
            if index in self.out_indices:
                outs.append(x)
        return outs


def _batchnorm_eval(module: nn.Module) -> None:
    """Put every BatchNorm under ``module`` in eval mode: running statistics are used and no longer updated."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.eval()


def _stage_out_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


class TimmBackbone(nn.Module):
    """Any timm model created with ``features_only=True``; ``out_indices`` index timm's ``feature_info``.

    ``pretrained``: False; True (timm's hub weights: needs network, error offline); or a local weights file
    (timm's ``pretrained_cfg_overlay={'file': path}``). ``norm_eval`` keeps BatchNorm layers in eval mode.
    """

    def __init__(self, *, name: str, out_indices: Sequence[int] = (2, 3, 4), pretrained: bool | str = False,
                 norm_eval: bool = True) -> None:
        super().__init__()
        import timm

        kwargs = dict(features_only=True, out_indices=tuple(out_indices))
        if isinstance(pretrained, str):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise ValueError(f"pretrained (timm {name}): weights file '{path}' does not exist")
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        else:
            kwargs.update(pretrained=bool(pretrained))
        try:
            self.body = timm.create_model(name, **kwargs)
        except RuntimeError as err:
            if "Unknown model" in str(err):
                raise ValueError(f"name: unknown timm model '{name}' (see timm.list_models())") from None
            raise
        except OSError as err:  # hub download failures surface as OSError / requests errors
            raise ValueError(f"pretrained (timm {name}): cannot fetch the weights ({err}); set "
                              "backbone.pretrained to the path of a local weights file") from None
        self.out_channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())
        self.norm_eval = norm_eval

    def train(self, mode: bool = True) -> "TimmBackbone":
        super().train(mode)
        if mode and self.norm_eval:
            _batchnorm_eval(self)
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [N, 3, H, W] -> list of [N, out_channels[i], H / strides[i], W / strides[i]]."""
        return list(self.body(images))
