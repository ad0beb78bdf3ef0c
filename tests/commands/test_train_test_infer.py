"""End to end through the CLI on a tiny synthetic dataset: train -> SIGKILL -> --resume -> test -> infer."""
import json
import os
import re
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


def _train_records(work_dir: Path) -> list[dict]:
    """The train records of the work dir's log, without their (wall-clock) ``time``."""
    records = [json.loads(x) for x in (work_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records if r["mode"] == "train"]


def _train_cmd(work_dir, opts, *extra):
    return [sys.executable, "-m", "gfldet.cli", "train", str(CONFIG), "--work-dir", str(work_dir), *extra,
            "--opts", *opts]


def test_train_kill_resume_test_infer(data_dir, tmp_path, capsys):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    opts = _opts(data_dir, **{"train.log_interval": 4})  # records at 4 and (the last partial window) 6
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

    # Refused resumes change nothing: a schedule ending before the checkpoint, another batch size.
    traces = {p: p.read_bytes() for p in full.rglob("*") if p.is_file()}
    assert main(["train", str(CONFIG), "--work-dir", str(full), "--resume", "--opts", *opts,
                 "train.max_iters=4"]) == 1
    assert re.search(r"train.max_iters=4 ends before the checkpoint \(epoch \d, iteration 6\): resume with "
                     r"train.max_iters >= 6", capsys.readouterr().err)
    assert main(["train", str(CONFIG), "--work-dir", str(full), "--resume", "--opts", *opts,
                 "data.batch_size=3"]) == 1
    assert "1 process(es) x 2 images" in capsys.readouterr().err
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path / "new"), "--resume", str(full / "latest.pth"),
                 "--opts", *opts, "data.batch_size=3"]) == 1
    assert "1 process(es) x 2 images" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in full.rglob("*") if p.is_file()} == traces
    assert not (tmp_path / "new").exists()

    # SIGKILL a longer run once its iteration-2 checkpoint exists (mid-epoch: ~6 iterations per epoch), then resume
    # it with the 6-iteration config from WORK_DIR/latest.pth (--resume without a path).
    run = tmp_path / "run"
    longer = _opts(data_dir, **{"train.log_interval": 4, "train.max_iters": 60})
    proc = subprocess.Popen(_train_cmd(run, longer), env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run / "iter_2.pth").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "iter_2.pth").exists()
    assert not [p for p in run.iterdir() if p.suffix == ".pth" and p.stat().st_size == 0]
    subprocess.run(_train_cmd(run, opts, "--resume"), check=True, env=env, capture_output=True, cwd=REPO,
                   timeout=300)
    resumed_from = json.loads([x for x in (run / "log.jsonl").read_text().splitlines() if "resumed" in x][-1])["iter"]
    assert resumed_from >= 2
    # the same records as the uninterrupted run: the killed run's after the checkpoint are gone, the logging
    # window that was cut by the kill is completed
    assert _train_records(run) == _train_records(full) and [r["iter"] for r in _train_records(full)] == [4, 6]

    assert main(["test", str(CONFIG), str(full / "latest.pth"), "--work-dir", str(tmp_path / "test"), "--analyze",
                 "--opts", *opts]) == 0
    analysis = json.loads((tmp_path / "test" / "error_analysis.json").read_text())
    assert analysis and (tmp_path / "test" / "error_analysis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "test" / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l", "per_class"} <= set(
        metrics)
    assert set(metrics["per_class"]) == {"circle", "square", "triangle", "cross"}
    results = json.loads((tmp_path / "test" / "results.json").read_text())
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    # the same detections through `gfldet eval` (as another detector's results would go): the same numbers
    assert main(["eval", str(data_dir / "val.json"), str(tmp_path / "test" / "results.json"), "--out",
                 str(tmp_path / "eval"), "--analyze"]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    assert json.loads((tmp_path / "eval" / "error_analysis.json").read_text()) == analysis

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


@pytest.mark.parametrize("trace", ["log.jsonl", "tensorboard/events.out.tfevents.1.host", "iter_2.pth"])
def test_new_run_refused_in_a_work_dir_of_an_interrupted_run(data_dir, tmp_path, capsys, trace):
    (tmp_path / trace).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / trace).write_text("")  # e.g. a run killed before its first checkpoint
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path), "--opts", *_opts(data_dir)]) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "another --work-dir, or delete it" in err
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [trace]


def test_both_schedule_lengths_are_an_error_naming_where_each_was_set(data_dir, tmp_path, capsys):
    opts = [o for o in _opts(data_dir) if not o.startswith("train.max_epochs=")]  # 12 in the config, 6 in --opts
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path / "w"), "--opts", *opts]) == 1
    assert re.search(r"gfl_r18_synthetic\.yaml:\d+ \(train\.max_epochs\) = 12 and override #\d+ "
                     r"'train\.max_iters=6' \(train\.max_iters\) = 6: set the other to null", capsys.readouterr().err)
    assert not (tmp_path / "w").exists()


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


def test_accumulation_scales_the_lr_by_the_images_of_a_step_and_is_validated(data_dir, tmp_path, capsys):
    runs = {"acc": {"data.batch_size": 1, "train.accumulate": 2}, "plain": {"data.batch_size": 2}}
    states = {}
    for name, extra in runs.items():
        opts = _opts(data_dir, **{"train.max_iters": 2, "train.eval_interval": 0, **extra})
        assert main(["train", str(CONFIG), "--work-dir", str(tmp_path / name), "--opts", *opts]) == 0
        states[name] = torch.load(tmp_path / name / "latest.pth", map_location="cpu", weights_only=False)
    acc, plain = states["acc"], states["plain"]
    assert (acc["meta"]["accumulate"], acc["meta"]["batch_size"], acc["meta"]["iters_per_epoch"]) == (2, 1, 6)
    assert [g["initial_lr"] for g in acc["optimizer"]["param_groups"]] == [
        g["initial_lr"] for g in plain["optimizer"]["param_groups"]]  # 2 images per step either way
    events = [json.loads(x)["message"] for x in (tmp_path / "acc" / "log.jsonl").read_text().splitlines()
              if '"event"' in x]
    base_lr = acc["optimizer"]["param_groups"][0]["initial_lr"]
    assert (f"2 images per optimiser step (1 process(es) x 1 images x 2 accumulated batch(es)); optimizer.lr 0.004 "
            f"for 16 images -> {base_lr:g}; 6 steps per epoch, 2 in all") in events
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path / "bad"), "--opts",
                 *_opts(data_dir, **{"train.accumulate": 0})]) == 1
    assert re.search(r"\(train\.accumulate\).*expected an integer >= 1", capsys.readouterr().err)
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path / "bad"), "--opts",
                 *_opts(data_dir, **{"train.accumulate": 7})]) == 1  # 12 images in batches of 2: 6 per epoch
    assert "train.accumulate = 7 but an epoch has only 6 batch(es)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
