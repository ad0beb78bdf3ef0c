"""train.channels_last: auto picks NHWC where its convolution kernels are the fast ones; bad values name the line."""
from pathlib import Path

import pytest
import torch

from gfldet.config import ConfigError, load_config
from gfldet.engine.launch import check_train_section
from gfldet.engine.memory_format import check_channels_last, describe_channels_last, use_channels_last

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(("capability", "nhwc"), [("AVX512", True), ("AVX2", False), ("DEFAULT", False),
                                                  ("SVE256", False)])
def test_auto_on_the_cpu_follows_its_vector_capability(monkeypatch, capability, nhwc):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert use_channels_last("auto", CPU) is nhwc
    assert describe_channels_last("auto", CPU) == f"channels_last: auto -> {'on' if nhwc else 'off'} " \
                                                  f"(CPU capability {capability})"


def test_auto_on_cuda_and_explicit_settings(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert use_channels_last("auto", CUDA) is False
    assert describe_channels_last("auto", CUDA) == "channels_last: auto -> off (cuda)"
    for device in (CPU, CUDA):
        assert use_channels_last(True, device) is True and use_channels_last(False, device) is False
    assert describe_channels_last(False, CUDA) == "channels_last: off"


def test_default_config_is_auto_and_passes_the_check():
    cfg = load_config(CONFIGS / "gfl/gfl_r50_fpn_1x_coco.yaml")
    assert check_train_section(cfg).channels_last == "auto"
    for value in (True, False):
        check_channels_last(value)


@pytest.mark.parametrize("value", ["yes", 1, None, "AUTO"])
def test_other_values_are_config_errors_naming_file_and_line(tmp_path, value):
    path = tmp_path / "exp.yaml"
    text = "null" if value is None else repr(value) if isinstance(value, str) else str(value)
    path.write_text(f"_base_: {CONFIGS / 'quickstart/gfl_r18_synthetic.yaml'}\ntrain:\n  channels_last: {text}\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:3.*train.channels_last must be auto, true or false, got"):
        check_train_section(load_config(path))
