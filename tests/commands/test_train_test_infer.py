"""End to end through the CLI on a tiny synthetic dataset: train -> SIGKILL -> --resume -> test -> infer."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gfldet.cli import main
from gfldet.data.synthetic import SynthSpec, generate_synthetic
from gfldet.engine.conv_kernels import use_channels_last, use_winograd

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quickstart" / "gfl_r18_synthetic.yaml"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(SynthSpec(num_train=12, num_val=4, height=96, width=128, seed=0), out)
    return out


def _opts(data_dir, **extra):
    opts = {f"data.{split}.{key}": str(data_dir / f"{'train' if split == 'train' else 'val'}.json")
            if key == "ann_file" else str(data_dir) for split in ("train", "val", "test")
            for key in ("ann_file", "img_dir")}
    opts.update({"data.batch_size": 2, "data.num_workers": 0, "train.max_epochs": "null", "train.max_iters": 6,
                 "train.checkpoint_interval": 2, "train.eval_interval": 6, "train.log_interval": 1,
                 "train.deterministic": "true", "train.lr_schedule.warmup_iters": 2, "model.neck.out_channels": 32,
                 "model.head.feat_channels": 32, "model.head.stacked_convs": 1, "model.head.norm_groups": 8})
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


def _losses(work_dir: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (work_dir / "log.jsonl").read_text().splitlines()]
    return {r["iter"]: r["loss"] for r in records if r["mode"] == "train"}


def _train_cmd(work_dir, opts, *extra):
    return [sys.executable, "-m", "gfldet.cli", "train", str(CONFIG), "--work-dir", str(work_dir), *extra,
            "--opts", *opts]


def test_train_kill_resume_test_infer(data_dir, tmp_path, capsys):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    opts = _opts(data_dir)
    full = tmp_path / "full"
    subprocess.run(_train_cmd(full, opts), check=True, env=env, capture_output=True, cwd=REPO, timeout=300)
    assert {"latest.pth", "best.pth", "iter_4.pth", "iter_6.pth", "config.yaml", "log.jsonl", "tensorboard"} <= {
        p.name for p in full.iterdir()}
    assert "train.max_iters" not in (full / "config.yaml").read_text() and "max_iters: 6" in (
        full / "config.yaml").read_text()
    cpu, on = torch.device("cpu"), {True: "on", False: "off"}
    kernels = (f"channels_last: auto -> {on[use_channels_last('auto', cpu)]}, "
               f"winograd: auto -> {on[use_winograd('auto', cpu)]}")  # the convolution kernels picked, logged
    assert any(kernels in line for line in (full / "log.jsonl").read_text().splitlines())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(full / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert any(tag.startswith("val/predictions/") for tag in events.Tags()["images"])  # drawn at the evaluation

    assert main(["train", str(CONFIG), "--work-dir", str(full), "--opts", *opts]) == 1  # would overwrite it
    assert "already holds a run" in capsys.readouterr().err

    # SIGKILL a longer run once its iteration-2 checkpoint exists (mid-epoch: ~6 iterations per epoch), then resume
    # it with the 6-iteration config from WORK_DIR/latest.pth (--resume without a path).
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(run, _opts(data_dir, **{"train.max_iters": 60})), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run / "iter_2.pth").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "iter_2.pth").exists()
    assert not [p for p in run.iterdir() if p.suffix == ".pth" and p.stat().st_size == 0]
    subprocess.run(_train_cmd(run, opts, "--resume"), check=True, env=env, capture_output=True, cwd=REPO,
                   timeout=300)
    full_losses, run_losses = _losses(full), _losses(run)
    resumed_from = json.loads([x for x in (run / "log.jsonl").read_text().splitlines() if "resumed" in x][-1])["iter"]
    assert resumed_from >= 2
    for it in range(resumed_from + 1, 7):  # iterations trained after the resume equal the uninterrupted run
        assert run_losses[it] == full_losses[it], it

    assert main(["test", str(CONFIG), str(full / "latest.pth"), "--work-dir", str(tmp_path / "test"), "--analyze",
                 "--opts", *opts]) == 0
    analysis = json.loads((tmp_path / "test" / "error_analysis.json").read_text())
    assert analysis and (tmp_path / "test" / "error_analysis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l", "per_class"} <= set(
        metrics)
    assert set(metrics["per_class"]) == {"circle", "square", "triangle", "cross"}
    results = json.loads((tmp_path / "test" / "results.json").read_text())
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)

    state = torch.load(full / "latest.pth", weights_only=False)
    state["meta"]["cat_ids"] = state["meta"]["cat_ids"][::-1]  # trained with another category order
    torch.save(state, tmp_path / "reordered.pth")
    assert main(["test", str(CONFIG), str(tmp_path / "reordered.pth"), "--work-dir", str(tmp_path / "t2"),
                 "--opts", *opts]) == 1
    assert "in the same order" in capsys.readouterr().err

    assert main(["test", str(CONFIG), str(full / "latest.pth"), "--split", "test", "--format-only", "--work-dir",
                 str(tmp_path / "dev"), "--opts", *opts]) == 0
    assert (tmp_path / "dev" / "detections_test-dev2017_gfl_r18_synthetic_results.zip").is_file()

    out = tmp_path / "vis"
    images = sorted((data_dir / "images").glob("val_*.jpg"))[:2]
    (tmp_path / "copy").mkdir()
    images.append(Path(shutil.copy(images[0], tmp_path / "copy")))  # same name in another folder: no overwrite
    assert main(["infer", str(CONFIG), str(full / "best.pth"), *map(str, images), "--out", str(out),
                 "--score-thr", "0.0", "--show-dist", "2", "--opts", *opts, "model.test_cfg.score_thr=0.0"]) == 0
    assert len(list((out / "distributions").glob("*.png"))) == 2 * len(images)  # the 2 best of each image
    detections = json.loads((out / "detections.json").read_text())
    assert [Path(d["file"]).name for d in detections] == [p.name for p in images]
    assert [d["drawn"] for d in detections] == [images[0].name, images[1].name, f"{images[0].stem}_2.jpg"]
    assert all((out / d["drawn"]).is_file() for d in detections)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path), "--resume"]) == 1
    assert "no checkpoint at" in capsys.readouterr().err


def test_config_typo_names_the_nearest_key(data_dir, tmp_path, capsys):
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path), "--opts", *_opts(data_dir),
                 "+train.max_epoch=3"]) == 1
    assert "max_epochs" in capsys.readouterr().err


def test_compile_flag_sets_train_compile_and_is_validated(data_dir, tmp_path, capsys):
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path), "--compile", "fastest", "--opts",
                 *_opts(data_dir)]) == 1
    assert "train.compile must be false, true or one of default, reduce-overhead" in capsys.readouterr().err
