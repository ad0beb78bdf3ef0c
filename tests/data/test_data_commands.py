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
