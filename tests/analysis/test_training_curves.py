"""Training curves from log.jsonl: reading (resume duplicates, bad lines) and the PNG."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from gfldet.analysis import plot_training_curves, read_log
from gfldet.errors import GfldetError


def write_log(work_dir, iters, *, extra=(), offset=0.0):
    work_dir.mkdir(parents=True, exist_ok=True)
    records = [{"mode": "train", "iter": i, "epoch": i // 10, "lr": 0.01 * min(1, i / 10),
                "loss": 3 - 0.05 * i + offset, "loss_cls": 1.0 - 0.01 * i, "loss_bbox": 1.5 - 0.02 * i,
                "loss_dfl": 0.5, "grad_norm": 5.0}
               for i in iters]
    records += [{"mode": "val", "iter": i, "epoch": i // 10, "bbox_mAP": i / 100, "bbox_mAP_50": i / 50,
                 "per_class": {"a": 0.1}} for i in iters if i % 10 == 0]
    records += [{"mode": "event", "iter": 5, "message": "checkpoint"}, *extra]
    (work_dir / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return work_dir


def test_resumed_iterations_keep_the_later_record(tmp_path):
    run = write_log(tmp_path / "run", range(1, 21),
                    extra=[{"mode": "train", "iter": 12, "epoch": 1, "lr": 0.01, "loss": -1.0}])
    log = read_log(run)
    assert log.name == "run"
    assert [r["iter"] for r in log.train] == list(range(1, 21))
    assert log.train[11]["loss"] == -1.0
    assert [r["iter"] for r in log.val] == [10, 20]


def test_two_runs_overlaid_in_one_png(tmp_path):
    runs = [write_log(tmp_path / "a", range(1, 31)), write_log(tmp_path / "b", range(1, 21), offset=0.5)]
    out = plot_training_curves(runs, tmp_path / "plots" / "curves.png", names=["base", "lower lr"])
    with Image.open(out) as png:  # loss, loss_bbox, loss_cls, loss_dfl, lr, AP: 2 rows of 3 400x300 panels
        assert png.format == "PNG" and png.size == (1200, 600)


def test_bad_inputs_name_the_file_and_line(tmp_path):
    with pytest.raises(GfldetError, match="log.jsonl not found"):
        read_log(tmp_path / "nowhere")
    run = write_log(tmp_path / "run", range(1, 3))
    with open(run / "log.jsonl", "a") as f:
        f.write('{"mode": "train", "iter": 3, "loss": 1.0\n')
    with pytest.raises(GfldetError, match=r"log.jsonl:4: not a JSON record"):
        read_log(run)
    with pytest.raises(GfldetError, match="2 names for 1 work dirs"):
        plot_training_curves([run], tmp_path / "x.png", names=["a", "b"])


def test_runs_without_evaluation_get_no_ap_panel(tmp_path):
    run = write_log(tmp_path / "run", range(1, 10))  # no multiple of 10: no val record
    assert read_log(run).val == []
    out = plot_training_curves([run], tmp_path / "curves.png")
    with Image.open(out) as png:  # 4 losses + lr = 5 panels: still 2 rows of 3
        assert png.size == (1200, 600)
