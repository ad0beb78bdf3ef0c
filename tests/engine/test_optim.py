import pytest
import torch
from torch import nn

from gfldet.config import Config, ConfigError
from gfldet.engine.optim import build_optimizer, check_optimizer, scaled_lr

OPT = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=1e-4, bias_lr_mult=2.0, bias_decay_mult=0.0,
           norm_decay_mult=0.0, base_batch_size=16, auto_scale_lr=True)


def _model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False), nn.GroupNorm(2, 4),
                          nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # a frozen parameter is left out
    return model


def test_param_groups_get_their_multipliers():
    model = _model()
    opt = build_optimizer(model, Config(OPT), total_batch_size=16)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"base", "bias", "norm"}
    assert {id(p) for p in groups["base"]["params"]} == {id(model[2].weight), id(model[4].weight)}
    assert {id(p) for p in groups["bias"]["params"]} == {id(model[0].bias), id(model[4].bias)}
    assert len(groups["norm"]["params"]) == 4  # BN and GN weight + bias
    assert groups["base"]["lr"] == pytest.approx(0.01) and groups["base"]["weight_decay"] == pytest.approx(1e-4)
    assert groups["bias"]["lr"] == pytest.approx(0.02) and groups["bias"]["weight_decay"] == 0.0
    assert groups["norm"]["lr"] == pytest.approx(0.01) and groups["norm"]["weight_decay"] == 0.0
    assert opt.param_groups[0]["momentum"] == 0.9
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("total, expected", [(16, 0.01), (4, 0.0025), (32, 0.02)])
def test_lr_scales_linearly_with_total_batch(total, expected):
    opt = build_optimizer(_model(), Config(OPT), total_batch_size=total)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    assert opt.param_groups[1]["lr"] == pytest.approx(2 * expected)


def test_auto_scale_can_be_disabled():
    assert scaled_lr(0.01, total_batch_size=4, base_batch_size=16, auto_scale=False) == 0.01
    opt = build_optimizer(_model(), Config({**OPT, "auto_scale_lr": False}), total_batch_size=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_unknown_optimizer_key_names_the_nearest():
    with pytest.raises(ConfigError, match="momentum"):
        build_optimizer(_model(), Config({**OPT, "momentun": 0.9}), total_batch_size=16)


def test_adamw_is_available():
    opt = build_optimizer(_model(), Config({k: v for k, v in OPT.items() if k != "momentum"} | {"type": "AdamW"}),
                          total_batch_size=16)
    assert isinstance(opt, torch.optim.AdamW)


def test_missing_key_points_at_the_base_schedule():
    cfg = Config({k: v for k, v in OPT.items() if k != "base_batch_size"})
    with pytest.raises(ConfigError, match="base_batch_size .*schedule_1x.yaml"):
        build_optimizer(_model(), cfg, total_batch_size=16)



def test_optimizer_typo_lists_every_key_and_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown key 'lrr'.*did you mean 'lr'\? \(valid keys: type, lr, "
                                          r"weight_decay, bias_lr_mult, bias_decay_mult, norm_decay_mult, "
                                          r"base_batch_size, auto_scale_lr, momentum"):
        build_optimizer(_model(), Config({**OPT, "lrr": 0.1}, path="optimizer"), total_batch_size=16)


def test_wrong_typed_optimizer_values_name_the_key():
    with pytest.raises(ConfigError, match=r"optimizer\.lr: expected a number > 0, got 'abc'"):
        check_optimizer(Config({**OPT, "lr": "abc"}, path="optimizer"))
    with pytest.raises(ConfigError, match=r"optimizer\.base_batch_size: expected an integer >= 1"):
        check_optimizer(Config({**OPT, "base_batch_size": 0}, path="optimizer"))
