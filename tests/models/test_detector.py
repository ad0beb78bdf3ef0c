"""build_detector from YAML: wiring, training step, config errors, timm backbone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gfldet.config import ConfigError, load_config
from gfldet.models import build_detector
from gfldet.models.heads.gfl_head import GFLHead

BASE_CONFIG = Path(__file__).parents[2] / "configs/_base_/models/gfl_r50_fpn.yaml"


def _batch():
    images = torch.randn(2, 3, 64, 96)
    sizes = [(64, 96), (50, 70)]
    boxes = [torch.tensor([[4.0, 6.0, 40.0, 50.0], [50.0, 10.0, 90.0, 30.0]]), torch.tensor([[0.0, 0.0, 70.0, 50.0]])]
    labels = [torch.tensor([0, 3]), torch.tensor([2])]
    return images, sizes, boxes, labels


def test_wiring_from_config(small_model_cfg):
    model = build_detector(small_model_cfg())
    assert isinstance(model.head, GFLHead) and model.head.num_classes == 4
    assert model.neck.lateral_convs[0].in_channels == 128  # ResNet-18 C3
    assert model.head.prior_generator.strides == [8, 16, 32, 64, 128]
    assert model.head.loss_bbox.loss_weight == 2.0 and model.head.loss_dfl.loss_weight == 0.25
    assert model.head.loss_cls.beta == 2.0 and model.head.assigner.topk == 9
    assert model.head.test_cfg.nms_iou == 0.6 and model.head.dfl_target_eps == 0.1


def test_training_step_backpropagates_to_unfrozen_parameters(small_model_cfg):
    model = build_detector(small_model_cfg()).train()
    losses = model(*_batch())
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_dfl"} and all(v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.head.cls_pred.weight.grad.abs().sum() > 0 and model.head.scales[0].grad is not None
    assert model.backbone.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert model.backbone.layer1[0].conv1.weight.grad is None  # frozen stage


def test_training_forward_traces_under_torch_compile(small_model_cfg):
    # What train.compile wraps: the whole training forward, target assignment included (its data-dependent steps
    # become graph breaks). aot_eager traces and runs forward and backward graphs without inductor's codegen.
    torch.manual_seed(0)
    eager = build_detector(small_model_cfg()).train()
    compiled_model = build_detector(small_model_cfg()).train()
    compiled_model.load_state_dict(eager.state_dict())
    batch = _batch()
    expected = eager(*batch)
    got = torch.compile(compiled_model, backend="aot_eager")(*batch)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    sum(expected.values()).backward()
    sum(got.values()).backward()
    for (name, p_eager), p_compiled in zip(eager.named_parameters(), compiled_model.parameters()):
        if p_eager.grad is not None:
            torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_typo_in_head_section_names_file_line_and_nearest_key(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(f"_base_: {BASE_CONFIG}\nmodel:\n  backbone:\n    pretrained: false\n  head:\n    reg_mx: 8\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml:6.*reg_mx.*did you mean 'reg_max'"):
        build_detector(load_config(config).model)


def test_bad_test_cfg_and_num_classes(small_model_cfg):
    with pytest.raises(ConfigError, match="nms_io.*nms_iou"):
        build_detector(small_model_cfg("+model.test_cfg.nms_io=0.5"))
    with pytest.raises(ConfigError, match="num_classes"):
        build_detector(small_model_cfg("model.num_classes=0"))
    with pytest.raises(ConfigError, match="unknown type 'qfll'.*qfl"):
        build_detector(small_model_cfg("model.head.loss_cls.type=qfll"))


def test_timm_backbone_detector(small_model_cfg):
    cfg = small_model_cfg()
    cfg.backbone = {"type": "timm", "name": "resnet10t", "out_indices": [2, 3, 4], "pretrained": False}
    model = build_detector(cfg).eval()
    cls, reg = model.raw_outputs(torch.randn(2, 3, 64, 96))
    assert [tuple(c.shape[-2:]) for c in cls] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    assert reg[0].shape[1] == 68


def test_component_errors_name_the_config_section(small_model_cfg):
    with pytest.raises(ConfigError, match=r"override #\d+ .*\(model.backbone.depth\): depth: 19 is not one of"):
        build_detector(small_model_cfg("model.backbone.depth=19"))


def test_per_image_lists_must_match_the_batch(small_model_cfg):
    model = build_detector(small_model_cfg()).eval()
    images, sizes, boxes, labels = _batch()
    with pytest.raises(ValueError, match="image_sizes: expected one entry per image \\(2\\), got 1"):
        model(images, sizes[:1], boxes, labels)
    with pytest.raises(ValueError, match="scale_factors"):
        model.predict(images, sizes, [(1.0, 1.0)])


def test_per_level_ranges_must_match_the_pyramid():
    config = Path(__file__).parents[2] / "configs/ablations/table1a_fcos_none.yaml"
    cfg = load_config(config, ["model.backbone.pretrained=false", "model.num_classes=3", "model.neck.num_outs=4"])
    with pytest.raises(ConfigError, match=r"\(model\.head\.assigner\): 5 per-level ranges for 4 pyramid levels"):
        build_detector(cfg.model)


def test_non_positive_reg_max_names_the_key(small_model_cfg):
    with pytest.raises(ConfigError, match=r"\(model\.head\.reg_max\): reg_max: must be an integer >= 1.*got -1"):
        build_detector(small_model_cfg("model.head.reg_max=-1"))
