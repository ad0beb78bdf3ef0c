"""Winograd F(4x4, 3x3) weight gradient: exact in float64 (the algebra), within rounding in float32, and used only
where it beat oneDNN."""
from __future__ import annotations

import pytest
import torch

from gfldet.models.winograd_weight_grad import conv3x3_weight_grad, winograd_weight_grad_pays_off


def _direct_weight_grad(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    weight = torch.empty(grad_output.shape[1], x.shape[1], 3, 3, dtype=x.dtype)
    return torch.ops.aten.convolution_backward(grad_output, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0],
                                               1, [False, True, False])[1]


@pytest.mark.parametrize("shape", [
    (1, 3, 4, 8, 8),     # whole tiles
    (3, 5, 6, 13, 10),   # partial tiles at the bottom and right
    (2, 4, 3, 1, 1),     # a single position: only the kernel's centre sees the image
    (1, 2, 7, 5, 17),
])
def test_float64_gradient_equals_the_direct_one(shape):
    num_images, c_in, c_out, height, width = shape
    torch.manual_seed(0)
    x = torch.randn(num_images, c_in, height, width, dtype=torch.float64)
    grad_output = torch.randn(num_images, c_out, height, width, dtype=torch.float64)
    ours = conv3x3_weight_grad(x, grad_output)
    reference = _direct_weight_grad(x, grad_output)
    assert ours.shape == (c_out, c_in, 3, 3) and ours.dtype == torch.float64 and ours.is_contiguous()
    # exact up to float64 rounding: a wrong transform matrix or tile offset would be off by O(1)
    assert (ours - reference).abs().max() < 1e-12 * reference.abs().max()


def test_channels_last_inputs_give_the_same_gradient():
    torch.manual_seed(0)
    x, grad_output = torch.randn(2, 8, 12, 16), torch.randn(2, 6, 12, 16)
    expected = conv3x3_weight_grad(x, grad_output)
    channels_last = [t.contiguous(memory_format=torch.channels_last) for t in (x, grad_output)]
    assert torch.equal(conv3x3_weight_grad(*channels_last), expected)


def test_float32_gradient_is_within_rounding_of_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 37, 45)
    grad_output = torch.randn(2, 48, 37, 45)
    reference = _direct_weight_grad(x.double(), grad_output.double())
    ours = conv3x3_weight_grad(x, grad_output)
    direct = _direct_weight_grad(x, grad_output)
    assert ours.dtype == torch.float32
    scale = reference.abs().max()
    assert (ours.double() - reference).abs().max() < 1e-5 * scale
    assert (direct.double() - reference).abs().max() < 1e-5 * scale
    assert not torch.equal(ours, direct)  # really another algorithm


@pytest.mark.parametrize("c_in, c_out, height, width, expected", [
    (256, 256, 64, 64, True),     # FPN / head at P3 of 512x512
    (256, 68, 100, 168, True),    # the regression output: 256 * 68 / 324 = 53.7 MACs per transformed value
    (128, 128, 64, 64, True),     # ResNet layer2: 64
    (64, 64, 128, 128, False),    # ResNet layer1: 32, the transforms cost what the products save
    (512, 512, 16, 16, False),    # 16 tiles an image: products too short
    (256, 256, 29, 29, True),     # 8 x 8 = 64 tiles (the last ones partial)
    (256, 256, 28, 28, False),    # 7 x 7 = 49
])
def test_pays_off_where_measured_faster(c_in, c_out, height, width, expected):
    assert winograd_weight_grad_pays_off(c_in, c_out, height, width) is expected
