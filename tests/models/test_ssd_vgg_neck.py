"""SSD's VGG16 backbone and neck: shapes (SSD512, SSD300), layout and names, init, L2Norm, pretrained loading."""
from __future__ import annotations

import math
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gfldet.models.necks import L2Norm, SSDNeck
from gfldet.models.vgg import SSDVGG

# mmdetection's configs/ssd/ssd512_coco.py and configs/_base_/models/ssd300.py necks, with the nominal strides
SSD512_NECK = dict(out_channels=[512, 1024, 512, 256, 256, 256, 256], level_strides=[2, 2, 2, 2, 1],
                   level_paddings=[1, 1, 1, 1, 1], last_kernel_size=4, l2_norm_scale=20.0,
                   strides=[8, 16, 32, 64, 128, 256, 512])
SSD300_NECK = dict(out_channels=[512, 1024, 512, 256, 256, 256], level_strides=[2, 2, 1, 1],
                   level_paddings=[1, 1, 0, 0], last_kernel_size=3, l2_norm_scale=20.0,
                   strides=[8, 16, 32, 64, 100, 300])
CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33]


def _neck(settings: dict, **overrides) -> SSDNeck:
    return SSDNeck(in_channels=[512, 1024], in_strides=[8, 16], **{**settings, **overrides})


@pytest.fixture(scope="module")
def vgg() -> SSDVGG:
    torch.manual_seed(0)
    return SSDVGG(pretrained=False).eval()


def test_vgg_ssd512_shapes_channels_strides(vgg):
    with torch.no_grad():
        feats = vgg(torch.randn(1, 3, 512, 512))
    assert [tuple(f.shape) for f in feats] == [(1, 512, 64, 64), (1, 1024, 32, 32)]
    assert vgg.out_channels == [512, 1024] and vgg.strides == [8, 16]
    assert all((f >= 0).all() for f in feats)  # both taken after their ReLU


def test_vgg_layout_and_parameter_names_are_mmdetections(vgg):
    layers = list(vgg.features)
    assert len(layers) == 35
    assert [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)] == CONV_INDICES
    assert [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)] == [4, 9, 16, 23, 30]
    assert all(layers[i].ceil_mode for i in (4, 9, 16, 23)) and (layers[30].kernel_size, layers[30].stride) == (3, 1)
    conv6, conv7 = layers[31], layers[33]
    assert (conv6.in_channels, conv6.out_channels, conv6.dilation, conv6.padding) == (512, 1024, (6, 6), (6, 6))
    assert (conv7.out_channels, conv7.kernel_size) == (1024, (1, 1))
    assert list(vgg.state_dict()) == [f"features.{i}.{leaf}" for i in CONV_INDICES for leaf in ("weight", "bias")]


def test_vgg_ceil_mode_rounds_up_odd_sizes():
    with torch.no_grad():
        up = SSDVGG(pretrained=False)(torch.randn(1, 3, 100, 76))
        down = SSDVGG(pretrained=False, ceil_mode=False)(torch.randn(1, 3, 100, 76))
    assert [tuple(f.shape[-2:]) for f in up] == [(13, 10), (7, 5)]
    assert [tuple(f.shape[-2:]) for f in down] == [(12, 9), (6, 4)]


def test_vgg_init_is_kaiming_normal_fan_out_with_zero_bias(vgg):
    for index in CONV_INDICES:
        conv = vgg.features[index]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        std = conv.weight.std().item()
        assert abs(std / math.sqrt(2 / fan_out) - 1) < 0.1, index
        assert abs(conv.weight.mean().item()) < 0.1 * std, index
        assert torch.count_nonzero(conv.bias) == 0, index


def test_vgg_frozen_stages():
    net = SSDVGG(pretrained=False, frozen_stages=2)
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == [
        f"features.{i}.{leaf}" for i in (0, 2, 5, 7) for leaf in ("weight", "bias")]
    assert all(p.requires_grad for p in SSDVGG(pretrained=False, frozen_stages=-1).parameters())
    with pytest.raises(ValueError, match="frozen_stages"):
        SSDVGG(pretrained=False, frozen_stages=6)


def test_vgg_pretrained_offline_error_says_how_to_supply_a_local_file(monkeypatch):
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    for pretrained in (True, "torchvision"):
        with pytest.raises(ValueError) as err:
            SSDVGG(pretrained=pretrained)
        message = str(err.value)
        assert message.startswith("pretrained (SSDVGG)")
        assert "vgg16_features-amdegroot-88682ab5.pth" in message and "backbone.pretrained" in message
        assert "local path" in message
    assert len(calls) == 2


def test_vgg_pretrained_from_torchvision_style_file(tmp_path, vgg):
    # torchvision's VGG16 key layout: features.0..28 and the classifier, no conv6 / conv7
    state = {k: v for k, v in vgg.state_dict().items() if int(k.split(".")[1]) <= 28}
    state["classifier.0.weight"] = torch.zeros(2, 3)
    path = tmp_path / "vgg16.pth"
    torch.save({"state_dict": state}, path)
    net = SSDVGG(pretrained=str(path))
    for key, value in state.items():
        if key.startswith("features."):
            assert torch.equal(net.state_dict()[key], value), key
    # as mmdetection: conv6 / conv7 keep PyTorch's default Conv2d init (kaiming_uniform, a=sqrt(5):
    # |w| <= 1/sqrt(fan_in)), which Kaiming-normal fan_out weights would exceed
    for index in (31, 33):
        conv = net.features[index]
        bound = 1 / math.sqrt(conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])
        assert conv.weight.abs().max() <= bound and torch.count_nonzero(conv.bias) > 0


def test_vgg_pretrained_from_mmdetection_backbone_keys(tmp_path, vgg):
    path = tmp_path / "ssd_backbone.pth"
    state = {f"backbone.{k}": v for k, v in vgg.state_dict().items()}
    state["neck.l2_norm.weight"] = torch.ones(512)  # other parts of a detector checkpoint are ignored
    torch.save(state, path)
    net = SSDVGG(pretrained=str(path))
    for (key, a), b in zip(vgg.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), key


def test_vgg_pretrained_mismatch_and_missing_file_are_clear(tmp_path, vgg):
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in vgg.state_dict().items() if k != "features.28.weight"}, path)
    with pytest.raises(ValueError, match=r"pretrained \(SSDVGG\).*do not match.*features.28.weight"):
        SSDVGG(pretrained=str(path))
    shapes = dict(vgg.state_dict(), **{"features.0.weight": torch.zeros(64, 1, 3, 3)})
    torch.save(shapes, path)
    with pytest.raises(ValueError, match="do not match the architecture"):
        SSDVGG(pretrained=str(path))
    with pytest.raises(ValueError, match="does not exist"):
        SSDVGG(pretrained=str(tmp_path / "nope.pth"))


def test_neck_ssd512_shapes_channels_strides():
    neck = _neck(SSD512_NECK)
    feats = [torch.randn(2, 512, 64, 64), torch.randn(2, 1024, 32, 32)]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(2, c, s, s) for c, s in zip(SSD512_NECK["out_channels"],
                                                                             [64, 32, 16, 8, 4, 2, 1])]
    assert neck.out_channels == SSD512_NECK["out_channels"] and neck.strides == SSD512_NECK["strides"]
    assert neck.extra_layers[-1][1].kernel_size == (4, 4)


def test_ssd300_backbone_and_neck_shapes():
    torch.manual_seed(0)
    backbone, neck = SSDVGG(pretrained=False).eval(), _neck(SSD300_NECK)
    with torch.no_grad():
        outs = neck(backbone(torch.randn(1, 3, 300, 300)))
    assert [tuple(o.shape) for o in outs] == [(1, c, s, s) for c, s in zip(SSD300_NECK["out_channels"],
                                                                             [38, 19, 10, 5, 3, 1])]
    assert neck.strides == [8, 16, 32, 64, 100, 300]


def test_neck_recipe_parameter_names_and_no_l2_norm_option():
    torch.manual_seed(0)
    neck = _neck(SSD300_NECK)
    feats = [torch.randn(1, 512, 38, 38), torch.randn(1, 1024, 19, 19)]
    outs = neck(feats)
    torch.testing.assert_close(outs[0], neck.l2_norm(feats[0]))
    assert outs[1] is feats[1]
    level = neck.extra_layers[0]
    torch.testing.assert_close(outs[2], F.relu(level[1](F.relu(level[0](feats[1])))))
    torch.testing.assert_close(outs[3], F.relu(neck.extra_layers[1][1](F.relu(neck.extra_layers[1][0](outs[2])))))
    assert (level[0].out_channels, level[1].stride, level[1].padding) == (256, (2, 2), (1, 1))
    assert list(neck.state_dict()) == ["l2_norm.weight"] + [
        f"extra_layers.{i}.{j}.{leaf}" for i in range(4) for j in range(2) for leaf in ("weight", "bias")]
    plain = _neck(SSD300_NECK, l2_norm_scale=0)
    assert plain.l2_norm is None and "l2_norm.weight" not in plain.state_dict()
    assert plain(feats)[0] is feats[0]


def test_neck_init_xavier_uniform_zero_bias_and_l2_norm_scale():
    neck = _neck(SSD512_NECK)
    for level in neck.extra_layers:
        for conv in level:
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert 0.9 * bound < conv.weight.abs().max() <= bound
            assert abs(conv.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.1
            assert torch.count_nonzero(conv.bias) == 0
    assert torch.equal(neck.l2_norm.weight, torch.full((512,), 20.0)) and neck.l2_norm.eps == 1e-10


def test_l2_norm_matches_a_direct_computation():
    torch.manual_seed(0)
    norm = L2Norm(num_channels=6, scale=20.0)
    with torch.no_grad():
        norm.weight.uniform_(1, 30)
    x = torch.randn(2, 6, 5, 4)
    expected = norm.weight.view(1, 6, 1, 1) * x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + 1e-10)
    torch.testing.assert_close(norm(x), expected)
    assert torch.equal(norm(torch.zeros(1, 6, 2, 2)), torch.zeros(1, 6, 2, 2))  # eps: no NaN at 0
    half = x.half()
    out = norm(half)  # computed in float32, returned as float16
    assert out.dtype == torch.float16
    assert torch.equal(out, (norm.weight.view(1, 6, 1, 1) * half.float()
                             / (half.float().pow(2).sum(1, keepdim=True).sqrt() + 1e-10)).half())


@pytest.mark.parametrize("override, argument", [
    (dict(out_channels=[256, 1024, 512, 256, 256, 256]), "out_channels"),
    (dict(out_channels=[512, 1024]), "out_channels"),
    (dict(level_strides=[2, 2, 1]), "level_strides"),
    (dict(level_paddings=[1, 1, 0, -1]), "level_paddings"),
    (dict(strides=[8, 16, 32, 64, 100]), "strides"),
    (dict(strides=[4, 16, 32, 64, 100, 300]), "strides"),
    (dict(last_kernel_size=0), "last_kernel_size"),
    (dict(l2_norm_scale=-1.0), "l2_norm_scale"),
])
def test_neck_bad_arguments_name_the_argument(override, argument):
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        _neck(SSD300_NECK, **override)
    with pytest.raises(ValueError, match="^in_strides:"):
        SSDNeck(in_channels=[512, 1024], in_strides=[8], **SSD300_NECK)


# mmdetection SSD512 checkpoint name -> gfldet name, written out by hand (no mmdetection needed; tests/parity/ checks
# the whole key set of a real mmdetection SSD512 model)
SSD_HAND_MAPPED = {
    "backbone.features.0.weight": "backbone.features.0.weight",
    "backbone.features.28.bias": "backbone.features.28.bias",
    "backbone.features.31.weight": "backbone.features.31.weight",
    "backbone.features.33.bias": "backbone.features.33.bias",
    "neck.l2_norm.weight": "neck.l2_norm.weight",
    "neck.extra_layers.0.0.conv.weight": "neck.extra_layers.0.0.weight",
    "neck.extra_layers.0.1.conv.bias": "neck.extra_layers.0.1.bias",
    "neck.extra_layers.4.1.conv.weight": "neck.extra_layers.4.1.weight",
    "bbox_head.cls_convs.0.0.weight": "head.cls_convs.0.weight",
    "bbox_head.cls_convs.6.0.bias": "head.cls_convs.6.bias",
    "bbox_head.reg_convs.3.0.weight": "head.reg_convs.3.weight",
}


def test_mmdet_ssd_checkpoint_keys_convert():
    from gfldet.checkpoint import convert_mmdet_state_dict

    state = {key: torch.tensor(float(i)) for i, key in enumerate(SSD_HAND_MAPPED)}
    converted = convert_mmdet_state_dict({"state_dict": state, "meta": {}})
    assert converted == {dst: torch.tensor(float(i)) for i, dst in enumerate(SSD_HAND_MAPPED.values())}
    neck = _neck(SSD512_NECK)
    mmdet_named = {f"neck.{k}".replace(".weight", ".conv.weight").replace(".bias", ".conv.bias")
                   if k.startswith("extra_layers.") else f"neck.{k}": v for k, v in neck.state_dict().items()}
    loaded = _neck(SSD512_NECK)
    loaded.load_state_dict({k[len("neck."):]: v for k, v in convert_mmdet_state_dict(mmdet_named).items()},
                           strict=True)
    for (key, a), b in zip(neck.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), key
