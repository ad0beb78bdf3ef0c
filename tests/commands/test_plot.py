"""``gfldet plot``: training curves of several work dirs in one PNG."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from gfldet.errors import GfldetError
from tests.export.tiny_models import run_command


def write_run(work_dir, scale):
    work_dir.mkdir()
    lines = [{"mode": "train", "iter": i, "epoch": 0, "lr": 0.01, "loss": scale / i, "loss_cls": 0.5 / i,
              "loss_bbox": 0.3 / i, "loss_dfl": 0.2 / i} for i in range(10, 110, 10)]
    lines += [{"mode": "val", "iter": 50, "epoch": 0, "bbox_mAP": 0.2 / scale, "bbox_mAP_50": 0.4 / scale},
              {"mode": "val", "iter": 100, "epoch": 1, "bbox_mAP": 0.3 / scale, "bbox_mAP_50": 0.5 / scale}]
    (work_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(work_dir)


def test_two_runs_one_png(tmp_path, capsys):
    runs = [write_run(tmp_path / "gfl", 1.0), write_run(tmp_path / "atss", 1.2)]
    out = tmp_path / "curves.png"
    assert run_command("plot", [*runs, "--out", str(out)]) == 0
    assert "2 run(s)" in capsys.readouterr().out
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (1200, 600)


def test_a_folder_without_log_is_a_clear_error(tmp_path):
    with pytest.raises(GfldetError, match="expected a gfldet work dir"):
        run_command("plot", [str(tmp_path), "--out", str(tmp_path / "x.png")])


def test_the_cli_routes_plot_and_prints_errors_in_one_line(tmp_path, capsys):
    from gfldet.cli import main

    assert main(["plot", write_run(tmp_path / "run", 1.0), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 1
    assert "gfldet plot: error:" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
