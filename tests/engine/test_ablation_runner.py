"""scripts/reproduce_ablations.sh: the dataset overlay changes only paths (each model keeps its own pipeline), and
the CPU-sized schedule leaves out the SSD512 rows with a message."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gfldet.config import load_config

ROOT = Path(__file__).parents[2]
OVERLAY = ROOT / "configs/ablations/_base_/bccd_data.yaml"


def _with_overlay(config: str, tmp_path: Path):
    run = tmp_path / "run.yaml"
    run.write_text(f"_base_:\n  - {ROOT / config}\n  - {OVERLAY}\n")
    return load_config(run), load_config(ROOT / config)


def test_bccd_overlay_keeps_the_model_s_pipeline(tmp_path):
    for config in ("configs/ablations/table1b_ssd512_qfl.yaml", "configs/ablations/table1b_retina_qfl.yaml"):
        run, original = _with_overlay(config, tmp_path)
        assert run.data.train.ann_file == "data/bccd/train.json" and run.data.val.img_dir == "data/BCCD/JPEGImages"
        assert run.model.num_classes is None
        for key in ("mean", "std", "size_divisor", "batch_size"):
            assert run.data[key] == original.data[key], key
        for split in ("train", "val", "test"):
            assert run.data[split].transforms == original.data[split].transforms, split


def test_short_schedule_skips_ssd_rows(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", "scripts/reproduce_ablations.sh", "--tables", "1b", "--schedule", "short",
                          "--data", "coco", "--dry-run", "--work-root", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "table1b_ssd512_ce: no CPU-sized version of SSD512" in out.stderr
    trained = [line for line in out.stdout.splitlines() if line.endswith(": training")]
    assert len(trained) == 4 and not any("ssd" in line for line in trained), trained
