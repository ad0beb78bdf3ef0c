"""train.channels_last and train.winograd: auto picks the kernels that are the fast ones on this machine; explicit
settings are obeyed; bad values name the file and line; the model is prepared accordingly."""
from pathlib import Path

import pytest
import torch

from gfldet.config import ConfigError, load_config
from gfldet.engine.conv_kernels import (chosen_conv_kernels, describe_conv_kernels, prepare_for_training,
                                        use_channels_last, use_winograd)
from gfldet.engine.launch import check_train_section
from gfldet.models import build_detector
from gfldet.models.winograd_conv import WinogradConv2d, nnpack_available

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUICKSTART = CONFIGS / "quickstart/gfl_r18_synthetic.yaml"
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def _train_cfg(**settings):
    return check_train_section(load_config(QUICKSTART, [f"train.{key}={value}" for key, value in settings.items()]))


@pytest.mark.parametrize(("capability", "nhwc", "winograd"), [("AVX512", True, False), ("AVX2", False, True),
                                                              ("DEFAULT", False, False), ("SVE256", False, False)])
def test_auto_on_the_cpu_follows_its_vector_capability(monkeypatch, capability, nhwc, winograd):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    winograd = winograd and nnpack_available()
    assert use_channels_last("auto", CPU) is nhwc and use_winograd("auto", CPU) is winograd
    assert chosen_conv_kernels({}, CPU) == {"channels_last": nhwc, "winograd": winograd}  # missing keys: auto
    assert chosen_conv_kernels(_train_cfg(winograd="false"), CPU) == {"channels_last": nhwc, "winograd": False}
    assert describe_conv_kernels(_train_cfg(), CPU) == (
        f"channels_last: auto -> {'on' if nhwc else 'off'}, winograd: auto -> {'on' if winograd else 'off'} "
        f"(CPU capability {capability})")


def test_auto_on_cuda_and_explicit_settings(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert use_channels_last("auto", CUDA) is False and use_winograd("auto", CUDA) is False
    assert describe_conv_kernels(_train_cfg(), CUDA) == "channels_last: auto -> off, winograd: auto -> off (cuda)"
    for device in (CPU, CUDA):
        for use in (use_channels_last, use_winograd):
            assert use(True, device) is True and use(False, device) is False
    assert describe_conv_kernels(_train_cfg(channels_last="false", winograd="true"), CUDA) == \
        "channels_last: off, winograd: on"
    winograd = "on" if nnpack_available() else "off"
    assert describe_conv_kernels(_train_cfg(channels_last="true"), CPU) == \
        f"channels_last: on, winograd: auto -> {winograd} (CPU capability AVX2)"


def test_default_config_is_auto_and_winograd_may_be_left_out():
    tcfg = check_train_section(load_config(CONFIGS / "gfl/gfl_r50_fpn_1x_coco.yaml"))
    assert tcfg.channels_last == "auto" and tcfg.winograd == "auto"
    del tcfg["winograd"]  # a config written before the option existed
    assert describe_conv_kernels(tcfg, CUDA).endswith("winograd: auto -> off (cuda)")


@pytest.mark.parametrize("key", ["channels_last", "winograd"])
@pytest.mark.parametrize("value", ["yes", 1, None, "AUTO"])
def test_other_values_are_config_errors_naming_file_and_line(tmp_path, key, value):
    path = tmp_path / "exp.yaml"
    text = "null" if value is None else repr(value) if isinstance(value, str) else str(value)
    path.write_text(f"_base_: {QUICKSTART}\ntrain:\n  {key}: {text}\n")
    with pytest.raises(ConfigError, match=rf"exp\.yaml:3.*train.{key} must be auto, true or false, got"):
        check_train_section(load_config(path))


@pytest.mark.parametrize(("channels_last", "winograd"), [(False, False), (True, False), (False, True)])
def test_prepare_for_training_sets_the_layout_and_swaps_every_part(channels_last, winograd):
    model = build_detector(load_config(QUICKSTART).model)
    keys = list(model.state_dict())
    assert prepare_for_training(model, channels_last=channels_last, winograd=winograd) is model
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in weights
               if w.shape[-1] > 1)
    swapped = {part: any(isinstance(m, WinogradConv2d) for m in getattr(model, part).modules())
               for part in ("backbone", "neck", "head")}
    assert swapped == {"backbone": winograd, "neck": winograd, "head": winograd}
    assert list(model.state_dict()) == keys  # checkpoints load either way
