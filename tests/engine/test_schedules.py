import math

import pytest
import torch

from gfldet.config import Config, ConfigError
from gfldet.engine.schedules import build_lr_scheduler


def _lrs(schedule: dict, *, iters_per_epoch: int, max_iters: int, base_lr: float = 0.01) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    sched = build_lr_scheduler(opt, Config(schedule), iters_per_epoch=iters_per_epoch, max_iters=max_iters)
    lrs = []
    for _ in range(max_iters):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_1x_schedule_warmup_then_steps_at_epochs_8_and_11():
    # 1x: 12 epochs of 100 iterations, warmup 500 iterations from 0.001x, x0.1 after epochs 8 and 11
    lrs = _lrs(dict(type="step", by_epoch=True, milestones=[8, 11], gamma=0.1, warmup_iters=500, warmup_ratio=0.001),
               iters_per_epoch=100, max_iters=1200)
    assert lrs[0] == pytest.approx(0.01 * 0.001)
    assert lrs[250] == pytest.approx(0.01 * (0.001 + 0.999 * 0.5))
    assert lrs[499] == pytest.approx(0.01 * (0.001 + 0.999 * 499 / 500))
    assert lrs[500] == pytest.approx(0.01)
    assert lrs[799] == pytest.approx(0.01)
    assert lrs[800] == pytest.approx(0.001)
    assert lrs[1099] == pytest.approx(0.001)
    assert lrs[1100] == pytest.approx(0.0001)


def test_iteration_based_steps():
    lrs = _lrs(dict(type="step", by_epoch=False, milestones=[3, 5], gamma=0.5, warmup_iters=0, warmup_ratio=1.0),
               iters_per_epoch=1000, max_iters=6)
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.0025])


def test_cosine_by_iteration_and_by_epoch():
    lrs = _lrs(dict(type="cosine", by_epoch=False, min_lr_ratio=0.1, warmup_iters=0, warmup_ratio=1.0),
               iters_per_epoch=10, max_iters=100)
    expected = [0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / 100))) for i in range(100)]
    assert lrs == pytest.approx(expected)
    by_epoch = _lrs(dict(type="cosine", by_epoch=True, min_lr_ratio=0.0, warmup_iters=0, warmup_ratio=1.0),
                    iters_per_epoch=10, max_iters=40)
    assert by_epoch[0:10] == pytest.approx([0.01] * 10)  # constant inside an epoch
    assert by_epoch[20] == pytest.approx(0.005)


def test_warmup_multiplies_the_decay():
    lrs = _lrs(dict(type="step", by_epoch=False, milestones=[2], gamma=0.1, warmup_iters=4, warmup_ratio=0.2),
               iters_per_epoch=100, max_iters=5)
    assert lrs == pytest.approx([0.002, 0.004, 0.1 * 0.006, 0.1 * 0.008, 0.001])


def test_schedule_typo_is_reported():
    with pytest.raises(ConfigError, match="milestones"):
        _lrs(dict(type="step", by_epoch=True, milestone=[8], gamma=0.1, warmup_iters=0, warmup_ratio=1.0),
             iters_per_epoch=1, max_iters=1)


def test_bad_schedule_value_is_a_config_error_naming_the_section():
    with pytest.raises(ConfigError, match=r"^train\.lr_schedule: milestones: must be increasing"):
        _lrs(dict(type="step", by_epoch=True, milestones=[11, 8], gamma=0.1, warmup_iters=0, warmup_ratio=1.0),
             iters_per_epoch=1, max_iters=1)
