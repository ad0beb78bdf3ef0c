"""The ``gfldet data`` commands end to end on a tiny synthetic dataset."""

from pathlib import Path

import pytest

from tests.data.data_helpers import REPO
from gfldet.cli import main


@pytest.fixture(scope="module")
def synth_config(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    assert main(["data", "synth", "--out", str(out / "synthetic"), "--num-train", "6", "--num-val", "2",
                 "--size", "96x128"]) == 0
    cfg = out / "cfg.yaml"
    cfg.write_text(f"_base_: {REPO / 'configs/_base_/datasets/synthetic.yaml'}\ndata:\n  num_workers: 0\n"
                   + "".join(f"  {s}:\n    ann_file: {out}/synthetic/{f}.json\n    img_dir: {out}/synthetic\n"
                             for s, f in (("train", "train"), ("val", "val"), ("test", "val"))))
    return cfg


def test_check_prints_a_summary(synth_config, capsys):
    assert main(["data", "check", str(synth_config), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "images: 6" in out and "total problems: 0" in out


def test_browse_writes_images(synth_config, tmp_path, capsys):
    assert main(["data", "browse", str(synth_config), "--out", str(tmp_path), "--num", "3", "--format", "png"]) == 0
    assert len(list(Path(tmp_path).glob("*.png"))) == 3


def test_stats_prints_histograms_and_reg_max_table(synth_config, tmp_path, capsys):
    png = tmp_path / "stats.png"
    assert main(["data", "stats", str(synth_config), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "box size sqrt(w*h)" in out and "reg_max  16" in out and "<- model.head.reg_max" in out
    assert png.stat().st_size > 1000


def test_bad_synth_size_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--size", "big"]) == 1
    assert "--size 'big': expected HxW" in capsys.readouterr().err


@pytest.mark.parametrize("backbone, first_stride", [
    ({"type": "resnet", "depth": 18, "out_indices": [1, 2, 3]}, 8),
    ({"type": "timm", "name": "resnet18", "out_indices": [1, 2, 3]}, 4),  # timm counts the stem: index 1 = stride 4
])
def test_stats_strides_come_from_the_backbone(backbone, first_stride):
    from gfldet.commands.data import _backbone_strides
    from gfldet.config import Config

    assert _backbone_strides(Config(backbone))[0] == first_stride


def test_check_reports_a_missing_annotation_file(synth_config, tmp_path, capsys):
    opts = ["--opts", f"data.train.ann_file={tmp_path / 'nope.json'}"]
    assert main(["data", "check", str(synth_config), *opts]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "annotation file not found" in out and "total problems: 1" in out
    assert main(["data", "check", str(synth_config), "--strict", *opts]) == 1


@pytest.mark.parametrize("extra, message", [
    ("  on_bad_imag: skip\n", "unknown key 'on_bad_imag' for data; did you mean 'on_bad_image'"),
    ("  on_bad_image: skipp\n", "data.on_bad_image must be one of error, skip; got 'skipp'"),
    ("  train:\n    filter_emty: true\n", "unknown key 'filter_emty' for data.train"),
    ("trian:\n  seed: 1\n", "unknown key 'trian' for the config's top level"),
])
def test_check_validates_the_config(synth_config, tmp_path, capsys, extra, message):
    cfg = tmp_path / "typo.yaml"
    text = f"_base_: {synth_config}\n" + ("" if extra.startswith("trian") else "data:\n") + extra
    cfg.write_text(text)
    assert main(["data", "check", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert message in err and "typo.yaml" in err and "Traceback" not in err


@pytest.mark.parametrize("strides", ["8,x", "0", "8,,16"])
def test_stats_rejects_bad_strides(synth_config, capsys, strides):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "stats", str(synth_config), "--strides", strides])
    assert exit_info.value.code == 2 and "expected comma-separated integers >= 1" in capsys.readouterr().err


def test_browse_out_must_be_a_folder(synth_config, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["data", "browse", str(synth_config), "--out", str(tmp_path / "file")]) == 1
    assert "exists and is not a directory" in capsys.readouterr().err


def test_stats_of_an_ssd_config_uses_gfl_settings_and_the_fixed_training_size(synth_config, tmp_path, capsys):
    config = tmp_path / "ssd.yaml"
    config.write_text(f"_base_:\n  - {REPO / 'configs/ssd/ssd300_coco.yaml'}\n  - {synth_config}\n"
                      "model:\n  backbone:\n    pretrained: false\n"
                      "data:\n  train:\n    transforms:\n      - {type: Resize, scale: [300, 150], keep_ratio: false}\n")
    assert main(["data", "stats", str(config)]) == 0
    out = capsys.readouterr().out
    assert "model.head.type ssd" in out and "using the GFL settings of gfl_r50_fpn.yaml" in out
    assert "reg_max  16" in out
