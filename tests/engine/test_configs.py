"""The engine-owned configs load, validate and carry the recipe's schedule numbers."""
from pathlib import Path

import pytest
import torch

from gfldet.config import ConfigError, check_keys, load_config
from gfldet.data.transforms import build_transform
from gfldet.engine.launch import EVALUATION_KEYS, check_sections, check_train_section, compile_mode
from gfldet.engine.optim import build_optimizer
from gfldet.engine.schedules import build_lr_scheduler

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ENGINE_CONFIGS = sorted([*CONFIGS.glob("gfl/*.yaml"), *CONFIGS.glob("ssd/*.yaml"), *CONFIGS.glob("bccd/*.yaml"),
                         *CONFIGS.glob("quickstart/*.yaml")])
ALL_EXPERIMENT_CONFIGS = sorted([*ENGINE_CONFIGS, *CONFIGS.glob("atss/*.yaml"), *CONFIGS.glob("ablations/*.yaml")])


@pytest.mark.parametrize("path", ALL_EXPERIMENT_CONFIGS, ids=lambda p: p.name)
def test_experiment_configs_have_only_known_sections(path):
    check_sections(load_config(path))


def test_misspelt_section_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"_base_: {CONFIGS / 'quickstart/gfl_r18_synthetic.yaml'}\ntrian:\n  max_epochs: 1\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:2 \(trian\): unknown key 'trian'.*did you mean 'train'"):
        check_sections(load_config(path))


@pytest.mark.parametrize("path", ENGINE_CONFIGS, ids=lambda p: p.name)
def test_config_sections_validate(path):
    cfg = load_config(path)
    check_train_section(cfg)
    check_keys(cfg.evaluation, EVALUATION_KEYS, where="evaluation")
    optimizer = build_optimizer(torch.nn.Linear(2, 2), cfg.optimizer, total_batch_size=16)
    build_lr_scheduler(optimizer, cfg.train.lr_schedule, iters_per_epoch=10, max_iters=100)


@pytest.mark.parametrize("size", [512, 300])
def test_ssd_recipes_are_mmdetection_s(size):
    """mmdetection's ssd{300,512}_coco.py: SGD 2e-3 for 64 images, 24 epochs of RepeatDataset(5) = 120 epochs with
    steps at 16 and 22 x 5, warmup 500 iterations; caffe-style input; train/test resized to size x size."""
    cfg = load_config(CONFIGS / f"ssd/ssd{size}_coco.yaml")
    opt, train = cfg.optimizer, cfg.train
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay, opt.base_batch_size) == ("SGD", 0.002, 0.9, 0.0005, 64)
    assert (train.max_epochs, train.lr_schedule.milestones, train.lr_schedule.warmup_iters) == (120, [80, 110], 500)
    assert train.eval_interval == 5 and train.grad_clip is None
    assert (cfg.data.mean, cfg.data.std, cfg.data.size_divisor) == ([123.675, 116.28, 103.53], [1.0, 1.0, 1.0], 1)
    for split in ("train", "val", "test"):
        resize = [t for t in cfg.data[split].transforms if t.type == "Resize"]
        assert resize[0].to_dict() == {"type": "Resize", "scale": [size, size], "keep_ratio": False}
        build_transform(cfg.data[split].transforms)


def test_1x_and_2x_recipes():
    one = load_config(CONFIGS / "gfl/gfl_r50_fpn_1x_coco.yaml")
    assert (one.optimizer.lr, one.optimizer.momentum, one.optimizer.weight_decay) == (0.01, 0.9, 0.0001)
    assert one.train.max_epochs == 12 and one.train.lr_schedule.milestones == [8, 11]
    assert (one.train.lr_schedule.warmup_iters, one.train.lr_schedule.warmup_ratio) == (500, 0.001)
    assert one.model.backbone.depth == 50 and one.data.batch_size * 8 == one.optimizer.base_batch_size
    two = load_config(CONFIGS / "gfl/gfl_x101-32x4d_fpn_ms-2x_coco.yaml")
    assert two.train.max_epochs == 24 and two.train.lr_schedule.milestones == [16, 22]
    assert (two.model.backbone.depth, two.model.backbone.groups, two.model.backbone.width_per_group) == (101, 32, 4)


def test_train_typo_names_the_nearest_key():
    cfg = load_config(CONFIGS / "gfl/gfl_r50_fpn_1x_coco.yaml", ["+train.eval_intreval=2"])
    with pytest.raises(ConfigError, match="eval_interval"):
        check_train_section(cfg)


@pytest.mark.parametrize(("value", "mode"), [("false", None), ("true", "default"), ("max-autotune", "max-autotune")])
def test_train_compile_modes(value, mode):
    cfg = load_config(CONFIGS / "gfl/gfl_r50_fpn_1x_coco.yaml", [f"train.compile={value}"])
    assert compile_mode(check_train_section(cfg)) == mode


def test_unknown_compile_mode_names_file_line_and_the_modes(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"_base_: {CONFIGS / 'quickstart/gfl_r18_synthetic.yaml'}\ntrain:\n  compile: fast\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:3.*train.compile must be false, true or one of default, "
                                          r"reduce-overhead.*got 'fast'"):
        check_train_section(load_config(path))


def test_quickstart_model_builds_without_download():
    from gfldet.models import build_detector

    cfg = load_config(CONFIGS / "quickstart/gfl_r18_synthetic.yaml")
    assert cfg.model.backbone.pretrained is False
    model = build_detector(cfg.model)
    assert sum(p.numel() for p in model.parameters()) < 15e6



@pytest.mark.parametrize(("line", "expected"), [
    ("seed: abc", r"train\.seed\): expected an integer >= 0, got 'abc'"),
    ("log_interval: often", r"train\.log_interval\): expected an integer >= 1"),
    ("max_iters: abc", r"train\.max_iters\): expected an integer >= 1 or null"),
    ("grad_clip: big", r"train\.grad_clip\): expected a number > 0 or null, got 'big'"),
    ("ema: 2.0", r"train\.ema\): expected a number in \[0, 1\] or null, got 2\.0"),
    ("device: gpu", r"train\.device\): expected one of auto, cpu, cuda, got 'gpu'"),
    ("amp: on", r"train\.amp\): expected one of off, fp16, bf16 \(YAML reads unquoted on/off"),
    ("lr_schedule:\n    milestones: 5", r"train\.lr_schedule\.milestones\).*must be a list of integers, got 5"),
])
def test_wrong_train_values_name_file_line_and_key(tmp_path, line, expected):
    path = tmp_path / "exp.yaml"
    path.write_text(f"_base_: {CONFIGS / 'quickstart/gfl_r18_synthetic.yaml'}\ntrain:\n  {line}\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:\d+ \(" + expected):
        check_train_section(load_config(path))


def test_unquoted_amp_off_is_off(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"_base_: {CONFIGS / 'quickstart/gfl_r18_synthetic.yaml'}\ntrain:\n  amp: off\n")
    assert check_train_section(load_config(path)).amp == "off"
    assert check_train_section(load_config(path, ["train.amp=off"])).amp == "off"  # what `--amp off` writes
