"""NNPACK Winograd convolutions: same outputs and gradients as the direct ones (to Winograd's rounding), used only
where they should be (large float32 CPU maps), swapped in only for eligible layers."""
from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gfldet.models import build_detector
from gfldet.models.inference_opt import optimize_for_inference
from gfldet.models import winograd_conv, winograd_weight_grad
from gfldet.models.winograd_conv import WinogradConv2d, nnpack_available, swap_in_winograd_convs

pytestmark = pytest.mark.skipif(not nnpack_available(), reason="this PyTorch build has no usable NNPACK")

# Against a float64 reference, relative to the output's largest magnitude (direct float32 conv: ~1.5e-6).
WINOGRAD_RTOL = 1e-4
# The tests' small layers (16 -> 24 channels) reach NNPACK from 4096 output positions, batch included, and
# compute their weight gradients by Winograd too (16 * 24 / 40 = 9.6 multiply-accumulates per transformed value).
TEST_MIN_POSITIONS = 4096
REAL_MIN_MACS_PER_TRANSFORMED_VALUE = winograd_weight_grad.MIN_MACS_PER_TRANSFORMED_VALUE


@pytest.fixture(autouse=True)
def small_layers_reach_nnpack(monkeypatch):
    monkeypatch.setattr(winograd_conv, "MIN_WORK", 16 * 24 * TEST_MIN_POSITIONS)
    monkeypatch.setattr(winograd_weight_grad, "MIN_MACS_PER_TRANSFORMED_VALUE", 8)


def _layer(bias: bool = True) -> WinogradConv2d:
    torch.manual_seed(0)
    return WinogradConv2d.from_conv(nn.Conv2d(16, 24, 3, padding=1, bias=bias)).eval()


def _count_nnpack_calls():
    return mock.patch.object(torch, "_nnpack_spatial_convolution", wraps=torch._nnpack_spatial_convolution)


def _count_winograd_weight_grads():
    return mock.patch.object(winograd_conv, "conv3x3_weight_grad", wraps=winograd_weight_grad.conv3x3_weight_grad)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 16, 64, 72), (3, 16, 64, 72), (4, 16, 32, 40)])
def test_large_batches_run_on_nnpack_in_one_call_and_match_direct_convolution(bias, shape):
    layer = _layer(bias)
    x = torch.randn(shape)  # 4608 positions per image, or 4 x 1280 = 5120 for the batch
    assert x[:, 0].numel() >= TEST_MIN_POSITIONS
    with torch.inference_mode(), _count_nnpack_calls() as nnpack:
        out = layer(x)
    assert nnpack.call_count == 1 and out.shape == (shape[0], 24, *shape[2:]) and out.is_contiguous()
    reference = F.conv2d(x.double(), layer.weight.double(), None if layer.bias is None else layer.bias.double(),
                         padding=1)
    # the images were stacked into one: a wrong border would show in the first and last rows of each image
    assert (out.double() - reference).abs().max() < WINOGRAD_RTOL * reference.abs().max()
    assert not torch.equal(out, F.conv2d(x, layer.weight, layer.bias, padding=1))  # really another algorithm


def test_the_real_threshold_counts_channels_as_well_as_positions(monkeypatch):
    monkeypatch.undo()  # the real MIN_WORK = 2**28 multiply-accumulates per kernel tap
    torch.manual_seed(0)
    wide = WinogradConv2d.from_conv(nn.Conv2d(256, 256, 3, padding=1)).eval()
    narrow = WinogradConv2d.from_conv(nn.Conv2d(64, 64, 3, padding=1)).eval()
    with torch.inference_mode(), _count_nnpack_calls() as nnpack:
        wide(torch.randn(1, 256, 64, 64))  # 256 * 256 * 4096 = 2**28
        narrow(torch.randn(8, 64, 64, 64))  # 64 * 64 * 32768 = 2**27: direct, NNPACK was slower there
        assert nnpack.call_count == 1
        narrow(torch.randn(2, 64, 128, 256))  # 2**28
        assert nnpack.call_count == 2


def test_everything_else_runs_the_ordinary_convolution():
    layer = _layer()
    small, large = torch.randn(1, 16, 32, 40), torch.randn(1, 16, 64, 72)
    with _count_nnpack_calls() as nnpack:
        with torch.inference_mode():
            assert torch.equal(layer(small), F.conv2d(small, layer.weight, layer.bias, padding=1))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert layer(large).dtype == torch.bfloat16
            assert torch.equal(layer.double()(large.double()), F.conv2d(large.double(), layer.weight, layer.bias,
                                                                         padding=1))
        layer.float()
        traced = torch.jit.trace(layer, large, check_trace=False)  # as gfldet.export traces
    assert nnpack.call_count == 0
    assert "nnpack" not in str(traced.graph)


def _float64_gradients(layer: nn.Conv2d, x: torch.Tensor, grad_output: torch.Tensor) -> list[torch.Tensor]:
    reference = copy.deepcopy(layer).double()
    x64 = x.detach().double().requires_grad_()
    reference(x64).backward(grad_output.double())
    return [x64.grad, reference.weight.grad, reference.bias.grad]


@pytest.mark.parametrize("winograd_weight_grad_pays_off", [True, False])
def test_training_runs_on_winograd_kernels_and_matches_float64_gradients(monkeypatch, winograd_weight_grad_pays_off):
    if not winograd_weight_grad_pays_off:  # the real threshold: too few channels, oneDNN's weight gradient
        monkeypatch.setattr(winograd_weight_grad, "MIN_MACS_PER_TRANSFORMED_VALUE",
                            REAL_MIN_MACS_PER_TRANSFORMED_VALUE)
    layer = _layer().train()
    x = torch.randn(2, 16, 64, 72, requires_grad=True)
    grad_output = torch.randn(2, 24, 64, 72)
    with _count_nnpack_calls() as nnpack, _count_winograd_weight_grads() as weight_grads:
        layer(x).backward(grad_output)
    assert nnpack.call_count == 2  # forward and input gradient
    assert weight_grads.call_count == int(winograd_weight_grad_pays_off)
    reference = _float64_gradients(layer, x, grad_output)
    for ours, ref in zip([x.grad, layer.weight.grad, layer.bias.grad], reference):
        assert ours.dtype == torch.float32 and ours.shape == ref.shape
        assert (ours.double() - ref).abs().max() < WINOGRAD_RTOL * ref.abs().max()


def test_a_channels_last_layer_trains_on_winograd_kernels():  # train.channels_last: true with train.winograd: true
    layer = _layer().train().to(memory_format=torch.channels_last)
    x = torch.randn(2, 16, 64, 72).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad_output = torch.randn(2, 24, 64, 72)
    with _count_nnpack_calls() as nnpack, _count_winograd_weight_grads() as weight_grads:
        layer(x).backward(grad_output)
    assert nnpack.call_count == 2 and weight_grads.call_count == 1
    reference = _float64_gradients(layer, x, grad_output)
    for ours, ref in zip([x.grad, layer.weight.grad, layer.bias.grad], reference):
        assert (ours.double() - ref).abs().max() < WINOGRAD_RTOL * ref.abs().max()


def test_training_computes_only_the_gradients_asked_for_and_repeats_exactly():
    layer = _layer().train()
    layer.bias.requires_grad_(False)
    x = torch.randn(2, 16, 64, 72)  # an input that needs no gradient (e.g. a frozen stage's output)
    grad_output = torch.randn(2, 24, 64, 72)
    with _count_nnpack_calls() as nnpack, _count_winograd_weight_grads() as weight_grads:
        layer(x).backward(grad_output)
    assert nnpack.call_count == 1 and layer.bias.grad is None  # the forward only: no input gradient
    assert weight_grads.call_count == 1
    first = layer.weight.grad.clone()
    layer.weight.grad = None
    layer(x).backward(grad_output)
    assert torch.equal(layer.weight.grad, first)  # deterministic: resumed runs repeat


def test_a_frozen_layer_still_passes_the_input_gradient_on():
    layer = _layer().train().requires_grad_(False)
    x = torch.randn(1, 16, 64, 72, requires_grad=True)
    grad_output = torch.randn(1, 24, 64, 72)
    with _count_winograd_weight_grads() as weight_grads:
        layer(x).backward(grad_output)
    assert layer.weight.grad is None and layer.bias.grad is None and weight_grads.call_count == 0
    reference = _float64_gradients(layer, x, grad_output)[0]
    assert (x.grad.double() - reference).abs().max() < WINOGRAD_RTOL * reference.abs().max()


def test_swap_takes_only_plain_stride1_3x3_convolutions_and_shares_their_parameters():
    class WeightStandardised(nn.Conv2d):
        pass

    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=2, dilation=2),
                          nn.Conv2d(8, 8, 3, padding=1, groups=2), WeightStandardised(8, 8, 3, padding=1),
                          nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)))
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    keys = list(model.state_dict())
    assert swap_in_winograd_convs(model) == 2
    assert [type(m) for m in model.modules() if isinstance(m, nn.Conv2d)].count(WinogradConv2d) == 2
    assert type(model[0]) is WinogradConv2d and type(model[6][0]) is WinogradConv2d
    assert [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)] == weights
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize(("capability", "expected"), [("AVX2", True), ("AVX512", False), ("DEFAULT", False)])
def test_optimize_for_inference_swaps_neck_and_head_on_avx2_cpus(small_model_cfg, monkeypatch, capability,
                                                                  expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    model = optimize_for_inference(build_detector(small_model_cfg()))
    swapped = {part: any(isinstance(m, WinogradConv2d) for m in getattr(model, part).modules())
               for part in ("backbone", "neck", "head")}
    assert swapped == {"backbone": False, "neck": expected, "head": expected}
    forced = optimize_for_inference(build_detector(small_model_cfg()), winograd=False)
    assert not any(isinstance(m, WinogradConv2d) for m in forced.modules())


def test_detector_outputs_and_detections_match_without_winograd(small_model_cfg):
    torch.manual_seed(0)
    # prior_prob 0.3: random weights then give detections above score_thr
    model = build_detector(small_model_cfg("model.head.prior_prob=0.3")).eval()
    images = torch.randn(1, 3, 512, 640)  # P3 64x80: the head's convs there run on NNPACK
    sizes, scales = [(512, 640)], [(1.0, 1.0)]
    direct = optimize_for_inference(copy.deepcopy(model), winograd=False)
    winograd = optimize_for_inference(copy.deepcopy(model), winograd=True)
    with torch.inference_mode(), _count_nnpack_calls() as nnpack:
        outputs = [m.raw_outputs(images) for m in (direct, winograd)]
        detections = [m.predict(images, sizes, scales)[0] for m in (direct, winograd)]
    assert nnpack.call_count > 0
    for ref_maps, win_maps in zip(*outputs):
        scale = max(m.abs().max().item() for m in ref_maps)
        assert max((a - b).abs().max().item() for a, b in zip(win_maps, ref_maps)) < WINOGRAD_RTOL * scale
    ref, win = detections
    assert len(ref["boxes"]) > 0 and torch.equal(ref["labels"], win["labels"])
    torch.testing.assert_close(win["boxes"], ref["boxes"], rtol=0, atol=1e-2)
    torch.testing.assert_close(win["scores"], ref["scores"], rtol=0, atol=1e-4)


def test_a_detector_training_step_matches_the_direct_one(small_model_cfg):
    torch.manual_seed(0)
    direct = build_detector(small_model_cfg()).train()
    winograd = copy.deepcopy(direct)
    assert swap_in_winograd_convs(winograd) > 0
    images = torch.randn(2, 3, 256, 320)
    boxes = [torch.tensor([[10.0, 20.0, 120.0, 140.0], [150.0, 60.0, 300.0, 230.0]])] * 2
    labels = [torch.tensor([0, 1])] * 2
    with _count_nnpack_calls() as nnpack, _count_winograd_weight_grads() as weight_grads:
        losses = [sum(m(images, [(256, 320)] * 2, boxes, labels).values()) for m in (direct, winograd)]
        for loss in losses:
            loss.backward()
    assert nnpack.call_count > 0  # forward and input gradients (the frozen stem's output needs none)
    assert weight_grads.call_count > 0
    assert losses[1].item() == pytest.approx(losses[0].item(), rel=1e-4)
    for (name, ref), ours in zip(direct.named_parameters(), winograd.parameters()):
        assert (ref.grad is None) == (ours.grad is None), name
        if ref.grad is not None:
            assert (ours.grad - ref.grad).abs().max() <= 1e-3 * ref.grad.abs().max() + 1e-8, name
