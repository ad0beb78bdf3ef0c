"""`gfldet benchmark` in a tiny setting, and the timing machinery behind it (no timing assertions)."""
from __future__ import annotations

import argparse
import json
import subprocess
import warnings
import sys
from pathlib import Path

import pytest
import torch

from gfldet.commands import benchmark as command
from gfldet.engine.benchmark import (StageTimes, count_macs, median_ratio, run_interleaved, stage_table,
                                    synthetic_batch)
from gfldet.errors import GfldetError

MODEL_CONFIG = Path(__file__).parents[2] / "configs/_base_/models/gfl_r50_fpn.yaml"
TINY = ["model.backbone.depth=18", "model.num_classes=3", "model.neck.out_channels=16",
        "model.head.feat_channels=16", "model.head.stacked_convs=1", "model.head.norm_groups=4"]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args([str(MODEL_CONFIG), "--device", "cpu", "--size", "256x288", "--runs", "2",
                              "--warmup", "1", *argv, "--opts", *TINY])


def test_infer_prints_every_stage_throughput_and_memory(capsys, tmp_path):
    out_json = tmp_path / "figures.json"
    assert command.run(_args("--batch", "2", "--json", str(out_json))) == 0
    out = capsys.readouterr().out
    for field in ("backbone+neck", "head", "postprocess", "total", "images/s", "peak memory", "fold_bn=on",
                  "padded 256x288", "machine: CPU", "torchvision"):
        assert field in out
    figures = json.loads(out_json.read_text())
    assert figures["mode"] == "infer" and figures["batch"] == 2 and figures["size"] == [256, 288]
    assert set(figures["ms_per_image"]) == {"backbone+neck", "head", "postprocess"}
    assert figures["images_per_s"] > 0 and figures["memory_method"]
    assert figures["parameters"] > figures["trainable_parameters"] > 1e6  # ResNet-18's stem and stage 1 are frozen
    assert figures["macs_per_image"] > 0 and f"{figures['macs_per_image'] / 1e9:.2f} GMACs per 256x288 image" in out


def test_macs_are_counted_per_multiply_accumulate():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(lambda: conv(torch.zeros(1, 3, 16, 16))) == 8 * 3 * 9 * 16 * 16
    from torchvision.models import resnet50

    model = resnet50().eval()  # torchvision's table: "GFLOPS" 4.09 at 224x224, i.e. multiply-accumulates
    assert count_macs(lambda: model(torch.zeros(1, 3, 224, 224))) / 1e9 == pytest.approx(4.09, abs=0.01)
    from torchvision.ops import DeformConv2d

    deform = DeformConv2d(8, 16, 3, padding=1)  # counted as the convolution it samples for
    assert count_macs(lambda: deform(torch.zeros(1, 8, 20, 24), torch.zeros(1, 18, 20, 24))) == 16 * 8 * 9 * 20 * 24


def test_counting_macs_leaves_the_model_as_it_was():
    # with --ckpt the timed model must be the checkpoint's: no BatchNorm statistics updated by the count
    from gfldet.config import load_config
    from gfldet.models import build_detector

    torch.manual_seed(0)
    model = build_detector(load_config(MODEL_CONFIG, [*TINY, "model.backbone.norm_eval=false",
                                                     "model.backbone.pretrained=false"]).model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    command._model_size(model.train(), synthetic_batch(batch_size=1, height=64, width=64, num_classes=3))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_images_are_padded_to_the_configs_size_divisor(capsys):
    # SSD300's config pads nothing (size_divisor 1): a 300x300 image must be timed and counted at 300x300
    assert command.run(_args("--size", "250x270", "--opts", "+data.size_divisor=1")) == 0
    assert "(padded 250x270)" in capsys.readouterr().out


def test_train_step_prints_forward_loss_backward_optimizer(capsys):
    assert command.run(_args("--mode", "train", "--batch", "2", "--no-channels-last")) == 0
    out = capsys.readouterr().out
    for field in ("forward", "loss", "backward", "optimizer", "images/s", "peak memory", "channels_last=off"):
        assert field in out


def test_plain_model_and_padding_to_32(capsys):
    assert command.run(_args("--no-optimize", "--size", "250x300")) == 0
    out = capsys.readouterr().out
    assert "none (--no-optimize)" in out and "padded 256x320" in out


@pytest.mark.parametrize("argv, message", [(("--size", "800"), "--size must be HxW"),
                                           (("--runs", "0"), "--runs must be >= 1"),
                                           (("--opts", "model.num_classes=null"), "num_classes")])
def test_bad_arguments_raise_clear_errors(argv, message):
    args = _args(*argv)
    if argv[0] == "--opts":
        args.opts = TINY + list(argv[1:])
    with pytest.raises(GfldetError, match=message):
        command.run(args)


def test_run_interleaved_alternates_order_and_chains_stages():
    calls = []

    def stages(name):
        return [("double", lambda x: (calls.append(name), 2 * x)[1]), ("add", lambda x: x + 1)]

    times = run_interleaved({"a": (stages("a"), 1), "b": (stages("b"), 10)}, runs=3, warmup=1,
                            device=torch.device("cpu"))
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert times["a"].last_output == 3 and times["b"].last_output == 21
    assert len(times["a"].wall) == 3 and len(times["a"].cpu[0]) == 2 and times["a"].names == ("double", "add")
    assert median_ratio(times["a"], times["a"]) == 1.0
    table = stage_table(times["a"], batch_size=2)
    assert table[1].startswith("double") and table[-1].startswith("throughput")


def test_stage_table_shares_add_up_and_the_run_total_is_named():
    # per-stage medians (3 s, 3 s) sum to 6 s; the median run takes 4 s: two different figures, both labelled
    runs = [[3.0, 1.0], [3.0, 3.0], [1.0, 3.0]]
    table = stage_table(StageTimes(("forward", "backward"), wall=runs, cpu=runs), batch_size=2)
    rows = {line[:16].strip(): line[16:].split() for line in table[1:5]}
    assert rows == {"forward": ["1500.0", "50%", "1500.0"], "backward": ["1500.0", "50%", "1500.0"],
                    "sum of stages": ["3000.0", "100%", "3000.0"], "run total": ["2000.0", "2000.0"]}
    assert "median of the whole-run times" in table[5] and table[6] == "throughput: 0.50 images/s"


def test_synthetic_batch_is_padded_and_boxes_lie_inside_the_image():
    batch = synthetic_batch(batch_size=3, height=100, width=130, num_classes=5, gts_per_image=4, seed=1)
    assert batch.images.shape == (3, 3, 128, 160)
    assert batch.images[:, :, 100:].abs().sum() == 0 and batch.images[:, :, :, 130:].abs().sum() == 0
    for boxes, labels in zip(batch.gt_boxes, batch.gt_labels):
        assert boxes.shape == (4, 4) and labels.shape == (4,) and labels.max() < 5
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 130).all() and (boxes[:, 3] <= 100).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 16).all()
    again = synthetic_batch(batch_size=3, height=100, width=130, num_classes=5, gts_per_image=4, seed=1)
    assert torch.equal(again.images, batch.images)


PEAK_OF_A_64_MIB_BLOCK = """
import torch
from gfldet.engine.benchmark import PeakMemory
with PeakMemory(torch.device("cpu")) as memory:
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
print(memory.peak_bytes, memory.method)
"""


def test_peak_memory_sees_a_large_allocation():
    # A fresh process: this one may keep freed memory mapped (cpu_allocator reuse, set by in-process CLI runs), and
    # a block that fits in it does not grow the RSS.
    out = subprocess.run([sys.executable, "-c", PEAK_OF_A_64_MIB_BLOCK], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    peak_bytes, method = out.split(maxsplit=1)
    assert method.strip()
    if method.startswith("CPU peak RSS"):
        assert int(peak_bytes) >= 48 * 2**20


def test_profile_prints_operator_table_and_writes_a_chrome_trace(capsys, tmp_path):
    trace = tmp_path / "trace.json"
    assert command.run(_args("--mode", "train", "--batch", "1", "--profile", str(trace))) == 0
    out = capsys.readouterr().out
    assert "profile of 3 runs (CPU self time)" in out and "Self CPU" in out and "aten::convolution_backward" in out
    assert "traceEvents" in json.loads(trace.read_text())


def test_find_syncs_refuses_the_cpu():
    with pytest.raises(GfldetError, match="--find-syncs needs a GPU"):
        command.run(_args("--find-syncs"))


def test_find_host_syncs_counts_the_sync_debug_warnings_per_source_line(monkeypatch):
    """The warnings torch raises on a GPU under set_sync_debug_mode("warn"), simulated on the CPU."""
    from gfldet.engine import benchmark as bench

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def synchronising_op():
        warnings.warn("called a synchronizing CUDA operation", UserWarning)

    def twice(x):
        synchronising_op()
        synchronising_op()
        return x

    stages = [("twice", twice), ("once", lambda x: synchronising_op() or x),
              ("other warning", lambda x: warnings.warn("unrelated") or x)]
    found = bench.find_host_syncs(stages, None, device=torch.device("cpu"))
    assert modes == ["warn", "default"]
    here = Path(__file__).name
    assert found == {f"{here}:{synchronising_op.__code__.co_firstlineno + 1} (synchronising_op)": 3}


def test_sync_source_line_is_the_innermost_gfldet_frame():
    import traceback

    from gfldet.engine import benchmark as bench

    package = Path(bench.__file__).resolve().parents[1]
    frame = traceback.FrameSummary
    stack = traceback.StackSummary.from_list([
        frame("/somewhere/train.py", 1, "main"), frame(str(package / "models/heads/targets.py"), 81, "build"),
        frame(str(package / "engine/benchmark.py"), 5, "run_stages"), frame("/site/torch/functional.py", 9, "op")])
    assert bench._source_line(stack) == "gfldet/models/heads/targets.py:81 (build)"
    assert bench._source_line(stack[:1]) == "train.py:1 (main)"
