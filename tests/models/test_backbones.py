"""Backbones: shapes, published channels/strides, freezing semantics, pretrained loading and its errors, DCN, timm."""
from __future__ import annotations
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn


from gfldet.models.backbones import DeformConv2d, ResNet, TimmBackbone


def _resnet18(**kwargs) -> ResNet:
    return ResNet(**{"depth": 18, "pretrained": False, **kwargs})


def test_resnet18_outputs_c3_c5_with_published_channels_and_strides():
    net = _resnet18(out_indices=(1, 2, 3)).eval()
    feats = net(torch.randn(2, 3, 96, 160))
    assert net.out_channels == [128, 256, 512] and net.strides == [8, 16, 32]
    assert [tuple(f.shape) for f in feats] == [(2, 128, 12, 20), (2, 256, 6, 10), (2, 512, 3, 5)]


def test_resnet50_and_resnext_channels():
    assert ResNet(depth=50, out_indices=(0, 1, 2, 3), pretrained=False).out_channels == [256, 512, 1024, 2048]
    x101 = ResNet(depth=101, groups=32, width_per_group=4, out_indices=(1, 2, 3), pretrained=False)
    first = x101.layer1[0].conv2
    assert (first.groups, first.out_channels) == (32, 128)  # 32 groups x 4 channels
    assert x101.layer2[0].conv2.stride == (2, 2)  # "pytorch" style: stride in the 3x3 conv
    assert x101.out_channels == [512, 1024, 2048]


def test_unused_stages_are_not_built():
    net = _resnet18(out_indices=(0, 1))
    assert not hasattr(net, "layer3") and net.strides == [4, 8]


def test_frozen_stages_and_norm_eval_survive_train():
    net = _resnet18(frozen_stages=1, norm_eval=True).train()
    frozen = [net.conv1, net.bn1, net.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())  # BN affine of unfrozen stages still trains
    assert all(not m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert net.layer2[0].conv1.training  # only the norms are in eval
    stats = net.layer3[0].bn1.running_mean.clone()
    net(torch.randn(1, 3, 64, 64))
    assert torch.equal(stats, net.layer3[0].bn1.running_mean)


def test_without_norm_eval_only_frozen_stages_keep_bn_in_eval():
    net = _resnet18(frozen_stages=2, norm_eval=False).train()
    assert not net.layer2[0].bn1.training and not net.bn1.training
    assert net.layer3[0].bn1.training
    assert not any(p.requires_grad for p in net.layer2.parameters())


def test_no_frozen_stage():
    net = _resnet18(frozen_stages=-1, norm_eval=False).train()
    assert all(p.requires_grad for p in net.parameters())


def test_pretrained_offline_error_says_how_to_supply_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ValueError) as err:
        ResNet(depth=18, pretrained=True)
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and "backbone.pretrained" in message and "local path" in message


def test_pretrained_from_local_file(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": reference.state_dict()}, path)  # wrapped, with the fc.* classifier
    net = _resnet18(pretrained=str(path))
    assert torch.equal(net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(net.bn1.running_var, reference.bn1.running_var)


def test_pretrained_mismatch_and_missing_file_are_clear(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(ValueError, match="do not match the architecture"):
        _resnet18(pretrained=str(path))
    with pytest.raises(ValueError, match="does not exist"):
        _resnet18(pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        ResNet(depth=101, groups=32, width_per_group=4, pretrained="torchvision")


@pytest.mark.parametrize("modulated, factor", [(False, 1.0), (True, 0.5)])
def test_deform_conv_starts_as_plain_conv(modulated, factor):
    dcn = DeformConv2d(8, 4, stride=2, modulated=modulated)
    x = torch.randn(1, 8, 9, 11)
    expected = nn.functional.conv2d(x, dcn.weight, stride=2, padding=1)
    torch.testing.assert_close(dcn(x), factor * expected, rtol=1e-5, atol=1e-5)
    assert dcn.conv_offset.out_channels == (27 if modulated else 18)


def test_deform_conv_offsets_are_dy_dx_pairs():
    """An offset of +1 in x on every kernel point equals the conv of the image shifted left by one pixel
    (except in the first column, where the deformable conv samples the image instead of the zero padding)."""
    dcn = DeformConv2d(2, 3)
    with torch.no_grad():
        dcn.conv_offset.bias[1::2] = 1.0  # (dy, dx) pairs: dx = 1
    x = torch.randn(1, 2, 7, 8)
    shifted = torch.cat([x[..., 1:], torch.zeros_like(x[..., :1])], dim=-1)
    expected = nn.functional.conv2d(shifted, dcn.weight, padding=1)
    torch.testing.assert_close(dcn(x)[..., 1:], expected[..., 1:], rtol=1e-5, atol=1e-5)


def test_dcn_stages_replace_3x3_convs():
    net = _resnet18(dcn_stages=(2, 3)).eval()
    assert isinstance(net.layer3[0].conv2, DeformConv2d) and not isinstance(net.layer2[0].conv2, DeformConv2d)
    assert net(torch.randn(1, 3, 64, 64))[-1].shape == (1, 512, 2, 2)
    with pytest.raises(ValueError, match="dcn_stages"):
        _resnet18(out_indices=(1, 2), dcn_stages=(3,))


def test_timm_backbone_features_only():
    net = TimmBackbone(name="resnet10t", out_indices=(2, 3, 4), pretrained=False).eval()
    feats = net(torch.randn(1, 3, 64, 96))
    assert net.strides == [8, 16, 32]
    assert [f.shape[1] for f in feats] == net.out_channels
    assert feats[0].shape[-2:] == (8, 12)
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmBackbone(name="resnet10tt")


def test_timm_pretrained_from_local_file_and_offline_error(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm

    reference = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.pth"
    torch.save(reference.state_dict(), path)
    net = TimmBackbone(name="resnet10t", out_indices=(2, 3, 4), pretrained=str(path))
    assert torch.equal(net.body.layer4[0].conv2.weight, reference.layer4[0].conv2.weight)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network attempt
    with pytest.raises(ValueError, match="cannot fetch the weights.*backbone.pretrained"):
        TimmBackbone(name="resnet10t", pretrained=True)
