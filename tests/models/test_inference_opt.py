"""optimize_for_inference / fold_batchnorm keep a detector's outputs.

Tolerance: folding rescales conv weights (W * g / sqrt(v + eps)), which changes float32 rounding; raw outputs are
compared to 1e-4 of their largest magnitude, detections to 1e-3 px and 1e-5 in score.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gfldet.models import build_detector
from gfldet.models.inference_opt import fold_batchnorm, optimize_for_inference

RTOL = 1e-4


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so that folding has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.fixture
def model_and_images(small_model_cfg):
    torch.manual_seed(0)
    # prior_prob 0.3: random weights then give detections above score_thr, so predictions can be compared
    model = build_detector(small_model_cfg("model.head.prior_prob=0.3")).eval()
    _randomise_batchnorm(model)
    images = torch.randn(2, 3, 96, 128)
    return model, images


def _assert_maps_close(actual, expected):
    """Per-level maps agree to RTOL of the largest magnitude over all levels (tiny levels, e.g. a 1x1 P7 after
    GroupNorm, hold only rounding noise, so a per-level relative test would be meaningless)."""
    scale = max(e.abs().max().item() for e in expected)
    for a, e in zip(actual, expected):
        assert (a - e).abs().max().item() < RTOL * scale


def _outputs(model, images):
    with torch.inference_mode():
        return model.raw_outputs(images)


@pytest.mark.parametrize("channels_last", [False, True])
def test_optimized_model_gives_the_same_raw_outputs(model_and_images, channels_last):
    model, images = model_and_images
    cls_ref, reg_ref = _outputs(model, images)
    optimized = optimize_for_inference(copy.deepcopy(model), channels_last=channels_last)
    cls_opt, reg_opt = _outputs(optimized, images)
    _assert_maps_close(cls_opt, cls_ref)
    _assert_maps_close(reg_opt, reg_ref)


def test_optimized_model_gives_the_same_detections(model_and_images):
    model, images = model_and_images
    sizes, scales = [(96, 128), (80, 120)], [(1.0, 1.0), (0.5, 0.5)]
    with torch.inference_mode():
        reference = model.predict(images, sizes, scales)
        optimized = optimize_for_inference(copy.deepcopy(model)).predict(images, sizes, scales)
    assert sum(len(r["boxes"]) for r in reference) > 0
    for ref, opt in zip(reference, optimized):
        assert torch.equal(ref["labels"], opt["labels"])
        torch.testing.assert_close(opt["boxes"], ref["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(opt["scores"], ref["scores"], rtol=0, atol=1e-5)


def test_fold_batchnorm_removes_every_resnet_batchnorm(model_and_images):
    model, _ = model_and_images
    # ResNet-18: stem 1 + 8 blocks x 2 + 3 downsample convs
    assert fold_batchnorm(model) == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.backbone.conv1.bias is not None


def test_fold_batchnorm_skips_deformable_convs(small_model_cfg):
    model = build_detector(small_model_cfg("model.backbone.dcn_stages=[3]")).eval()
    _randomise_batchnorm(model)
    images = torch.randn(1, 3, 160, 256)  # P7 must be larger than 1x1 for GroupNorm
    reference = _outputs(model, images)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == 20 - 2  # the two DCN conv2 of stage 3 keep their BatchNorm
    assert isinstance(folded.backbone.layer4[0].bn2, nn.BatchNorm2d)
    for actual, expected in zip(_outputs(folded, images), reference):
        _assert_maps_close(actual, expected)


def test_fold_batchnorm_refuses_training_mode(model_and_images):
    model, _ = model_and_images
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model.train())


def test_optimize_for_inference_freezes_and_evaluates(model_and_images):
    model, _ = model_and_images
    optimized = optimize_for_inference(model.train())
    assert optimized is model and not model.training
    assert not any(p.requires_grad for p in model.parameters())
