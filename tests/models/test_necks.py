"""FPN P3-P7: shapes, strides, top-down path, extra levels on the P5 output without ReLU, init."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F


from gfldet.models.necks import FPN


def _fpn():
    torch.manual_seed(0)
    return FPN(in_channels=[8, 16, 32], in_strides=[8, 16, 32], out_channels=16, num_outs=5)


def _feats(h=13, w=10):  # odd sizes: the top-down upsampling must follow the lower level's size
    return [torch.randn(2, 8, h, w), torch.randn(2, 16, math.ceil(h / 2), math.ceil(w / 2)),
            torch.randn(2, 32, math.ceil(h / 4), math.ceil(w / 4))]


def test_shapes_channels_and_strides():
    fpn = _fpn()
    outs = fpn(_feats())
    assert [tuple(o.shape[-2:]) for o in outs] == [(13, 10), (7, 5), (4, 3), (2, 2), (1, 1)]
    assert fpn.out_channels == [16] * 5 and fpn.strides == [8, 16, 32, 64, 128]
    assert [k for k in fpn.state_dict() if k.endswith("weight")] == (
        [f"lateral_convs.{i}.weight" for i in range(3)] + [f"fpn_convs.{i}.weight" for i in range(5)])


def test_top_down_path_and_extra_levels_follow_the_recipe():
    fpn = _fpn()
    feats = _feats()
    outs = fpn(feats)
    lat = [conv(f) for conv, f in zip(fpn.lateral_convs, feats)]
    p4_inner = lat[1] + F.interpolate(lat[2], size=lat[1].shape[-2:], mode="nearest")
    p3_inner = lat[0] + F.interpolate(p4_inner, size=lat[0].shape[-2:], mode="nearest")
    torch.testing.assert_close(outs[0], fpn.fpn_convs[0](p3_inner))
    torch.testing.assert_close(outs[3], fpn.fpn_convs[3](outs[2]))  # P6 from the P5 *output*
    assert (outs[3] < 0).any(), "the check below needs negative P6 values"
    torch.testing.assert_close(outs[4], fpn.fpn_convs[4](outs[3]))  # no ReLU before P7
    assert not torch.allclose(outs[4], fpn.fpn_convs[4](outs[3].relu()))


def test_xavier_uniform_init_with_zero_bias():
    fpn = _fpn()
    for conv in list(fpn.lateral_convs) + list(fpn.fpn_convs):
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.5 * bound
        assert torch.count_nonzero(conv.bias) == 0


def test_num_outs_smaller_than_inputs_is_an_error():
    with pytest.raises(ValueError, match="num_outs"):
        FPN(in_channels=[8, 16, 32], in_strides=[8, 16, 32], out_channels=16, num_outs=2)


def test_extra_levels_on_the_input_start_from_c5():
    torch.manual_seed(0)
    fpn = FPN(in_channels=[8, 16, 32], in_strides=[8, 16, 32], out_channels=16, num_outs=5, extra_convs_on="input")
    feats = _feats()
    outs = fpn(feats)
    assert fpn.fpn_convs[3].in_channels == 32 and fpn.fpn_convs[4].in_channels == 16
    torch.testing.assert_close(outs[3], fpn.fpn_convs[3](feats[2]))  # P6 from C5 (mmdetection's 'on_input')
    torch.testing.assert_close(outs[4], fpn.fpn_convs[4](outs[3]))
    with pytest.raises(ValueError, match="extra_convs_on"):
        FPN(in_channels=[8, 16, 32], in_strides=[8, 16, 32], num_outs=5, extra_convs_on="c5")


@pytest.mark.parametrize("extra_convs_on", ["output", "input"])
def test_matches_mmdetection_fpn(extra_convs_on):
    from tests.mmdet_compat import import_mmdet

    import_mmdet()
    from mmdet.models.necks import FPN as MMDetFPN

    ours = FPN(in_channels=[8, 16, 32], in_strides=[8, 16, 32], out_channels=16, num_outs=5,
               extra_convs_on=extra_convs_on)
    theirs = MMDetFPN(in_channels=[8, 16, 32], out_channels=16, num_outs=5, add_extra_convs=f"on_{extra_convs_on}")
    theirs.load_state_dict({k.replace(".weight", ".conv.weight").replace(".bias", ".conv.bias"): v
                            for k, v in ours.state_dict().items()})
    feats = _feats()
    for a, b in zip(ours(feats), theirs(feats)):
        torch.testing.assert_close(a, b)
