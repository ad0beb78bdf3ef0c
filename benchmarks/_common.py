"""Shared pieces of the benchmark scripts: the torchvision FCOS peer, gfldet's R-50 model, arguments, reports.

Timing itself lives in ``gfldet.engine.benchmark`` (interleaved runs, medians, wall and CPU clocks). On a GPU
(``--device cuda``) every stage is synchronised, ratios are of wall time, and each contender's memory is measured
on its own (:func:`cuda_memory_lines`).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

import torch
from torchvision.models import resnet50
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.fcos import FCOS
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from gfldet.config import load_config
from gfldet.engine.amp import AMP_MODES, autocast, make_grad_scaler
from gfldet.engine.benchmark import PeakMemory, Stage, StageTimes, environment_lines, median_ratio, run_stages
from gfldet.engine.conv_kernels import chosen_conv_kernels, prepare_for_training
from gfldet.engine.host_allocator import CPU_ALLOCATOR_MODES, configure_cpu_allocator
from gfldet.engine.launch import resolve_device
from gfldet.models import build_detector
from gfldet.models.winograd_conv import winograd_pays_off

REPO = Path(__file__).resolve().parents[1]
R50_CONFIG = REPO / "configs/gfl/gfl_r50_fpn_1x_coco.yaml"
NUM_CLASSES = 80
# The training step of every contender: SGD over its trainable parameters
SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY = 1e-3, 0.9, 1e-4


def build_gfl_r50(overrides: tuple[str, ...] = ()) -> torch.nn.Module:
    """gfldet's GFL R-50-FPN (80 classes) with random weights (nothing downloaded)."""
    cfg = load_config(R50_CONFIG, ["model.backbone.pretrained=false", *overrides])
    return build_detector(cfg.model)


def build_fcos_r50(*, height: int, width: int, score_thresh: float = 0.05, nms_thresh: float = 0.6,
                   detections_per_img: int = 100, topk_candidates: int = 1000) -> FCOS:
    """torchvision FCOS R-50-FPN as ``fcos_resnet50_fpn(weights_backbone=...)`` builds it, without the download.

    ``fcos_resnet50_fpn(weights=None, weights_backbone=None)`` switches to trainable BatchNorm and 5 trainable
    stages; with a pretrained backbone it uses FrozenBatchNorm2d and trainable_backbone_layers=3 (stem and layer1
    frozen), which is what our frozen_stages=1 / norm_eval config matches, so that branch is rebuilt here from the
    same torchvision parts. The transform gets mean 0 / std 1 (inputs are already normalised) and
    min_size=min(H, W), max_size=max(H, W), so an HxW input is "resized" by a factor of exactly 1.
    """
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    return FCOS(backbone, NUM_CLASSES, min_size=min(height, width), max_size=max(height, width),
                image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0], score_thresh=score_thresh,
                nms_thresh=nms_thresh, detections_per_img=detections_per_img, topk_candidates=topk_candidates)


def step_stages(model: torch.nn.Module, forward_loss: Callable[[], dict], *, device: torch.device,
                amp: str) -> list[Stage]:
    """One training step as stages every contender shares: forward+loss (``forward_loss()`` -> dict of losses,
    which may be lists (mmdetection's per-level terms); under autocast for ``amp``) -> backward (scaled for fp16)
    -> optimizer (SGD with ``SGD_*`` over the trainable parameters; scaler update; zero_grad)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=SGD_LR,
                                momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
    scaler = make_grad_scaler(device, amp)

    def losses(_):
        with autocast(device, amp):
            return sum(sum(v) if isinstance(v, list) else v for v in forward_loss().values())

    def step(_):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return [("forward+loss", losses), ("backward", lambda total: scaler.scale(total).backward()),
            ("optimizer", step)]


def train_conv_kernels(device: torch.device) -> dict[str, bool]:
    """What ``gfldet train`` picks on ``device`` with ``train.channels_last`` and ``train.winograd`` at auto."""
    return chosen_conv_kernels({}, device)


def describe_kernels(kernels: dict[str, bool]) -> str:
    """``{"channels_last": False, "winograd": True}`` -> ``"NCHW, Winograd"``; ``"NCHW"`` for neither."""
    return ", ".join(["channels_last" if kernels["channels_last"] else "NCHW"]
                     + (["Winograd"] if kernels["winograd"] else []))


def gfl_train_stages(model: torch.nn.Module, batch, *, channels_last: bool, winograd: bool, device: torch.device,
                     amp: str) -> list[Stage]:
    """:func:`step_stages` of gfldet's detector on ``batch`` (a ``Batch``) with the convolution kernels of
    ``train.channels_last`` / ``train.winograd``."""
    model.train()
    prepare_for_training(model, channels_last=channels_last, winograd=winograd)
    images = batch.images
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return step_stages(model, lambda: model(images, batch.image_sizes, batch.gt_boxes, batch.gt_labels),
                       device=device, amp=amp)


def gfl_train_contenders(build: Callable[[], torch.nn.Module], batch, *, device: torch.device, amp: str,
                         also_winograd: bool = False
                         ) -> tuple[dict[str, tuple[list[Stage], None]], dict[str, torch.nn.Module]]:
    """Pipelines of gfldet's training step, and their models (each from ``build()``): with the convolution kernels
    ``gfldet train`` picks here and, where those differ, with plain NCHW direct convolutions for comparison; with
    ``also_winograd``, NCHW Winograd convolutions too where ``auto`` does not pick them."""
    chosen = train_conv_kernels(device)
    variants = {f"gfldet ({describe_kernels(chosen)})": chosen}
    others = {"gfldet (NCHW, direct)": {"channels_last": False, "winograd": False}}
    if also_winograd:
        others["gfldet (NCHW, Winograd)"] = {"channels_last": False, "winograd": True}
    variants.update({name: kernels for name, kernels in others.items() if kernels not in variants.values()})
    models = {name: build() for name in variants}
    pipelines = {name: (gfl_train_stages(models[name], batch, **kernels, device=device, amp=amp), None)
                 for name, kernels in variants.items()}
    return pipelines, models


def add_common_arguments(parser: argparse.ArgumentParser, *, default_runs: int, default_warmup: int = 1) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 run: a smoke test, not a figure")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where every contender runs (cuda: cudnn.benchmark on for all; default cpu)")
    parser.add_argument("--runs", type=int, default=default_runs, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=default_warmup, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: torch's, one per core; on a machine shared with other "
                             "jobs use 1: the CPU-time figures then measure work, not waiting)")
    parser.add_argument("--cpu-allocator", choices=CPU_ALLOCATOR_MODES, default="reuse",
                        help="malloc mode of the whole process, so of every contender (default reuse, as gfldet "
                             "train; system = glibc's default)")
    parser.add_argument("--md", type=Path, default=None, help="markdown snippet path (default benchmarks/results/)")


def add_step_arguments(parser: argparse.ArgumentParser, *, default_amp: list[str]) -> None:
    """``--sizes`` (training NxHxW settings) and ``--amp`` (precision modes, each run for every contender)."""
    parser.add_argument("--sizes", nargs="+", default=["2x800x1333", "8x512x512"], help="training NxHxW settings")
    parser.add_argument("--amp", nargs="+", choices=list(AMP_MODES), default=default_amp,
                        help=f"precision modes of the training step, each run for every contender (default: "
                             f"{' and '.join(default_amp)})")
    parser.add_argument("--also-winograd", action="store_true",
                        help="also time gfldet with train.winograd: true where auto leaves it off (AVX-512 CPUs, "
                             "where Winograd and oneDNN's direct kernels were never compared)")


def step_sizes(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """(batch, height, width) of each ``--sizes`` setting; one tiny one under ``--quick``."""
    return [(2, 128, 160)] if args.quick else [tuple(int(v) for v in s.split("x")) for s in args.sizes]


def setup(args: argparse.Namespace) -> None:
    """Seed, threads, device, allocator, --quick; sets ``args.device`` to a ``torch.device`` and records the
    machine, versions, allocator, date and load average in ``args.environment``."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    args.device = torch.device(resolve_device(args.device, setting="--device"))
    if args.quick:
        args.runs, args.warmup = 1, 0
    training = describe_kernels(train_conv_kernels(args.device))
    inference = describe_kernels({"channels_last": True, "winograd": winograd_pays_off(args.device)})
    args.environment = [*environment_lines(args.device),
                        f"gfldet's convolution kernels here: training {training} (train.channels_last / "
                        f"train.winograd: auto); inference {inference} (optimize_for_inference)"]
    if args.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # what `gfldet train/test` set on a GPU; the peer gets it too
        args.environment.append("cudnn.benchmark: on (every contender)")
        return
    changed = configure_cpu_allocator(args.cpu_allocator)
    allocator = args.cpu_allocator if changed else f"{args.cpu_allocator} (malloc unchanged)"
    args.environment.append(f"CPU allocator (every contender): {allocator}")


def ratio_lines(times: dict[str, StageTimes], *, peer: str, batch_size: int, device: torch.device) -> list[str]:
    """Markdown table rows: per pipeline, median ms per image, images/s and the ratio of times to ``peer``; on the
    CPU also process CPU time (on a GPU the host's CPU time says little: it spins in synchronize)."""
    if device.type == "cuda":
        rows = ["| pipeline | ms/img | images/s | time ratio |", "|---|---:|---:|---:|"]
        for name, t in times.items():
            rows.append(f"| {name} | {1000 * t.median_total() / batch_size:.2f} | "
                        f"{batch_size / t.median_total():.1f} | {median_ratio(t, times[peer]):.3f} |")
        return rows
    rows = ["| pipeline | wall ms/img | CPU ms/img | wall ratio | CPU ratio |", "|---|---:|---:|---:|---:|"]
    for name, t in times.items():
        rows.append(f"| {name} | {1000 * t.median_total() / batch_size:.1f} | "
                    f"{1000 * t.median_total('cpu') / batch_size:.1f} | {median_ratio(t, times[peer]):.3f} | "
                    f"{median_ratio(t, times[peer], 'cpu'):.3f} |")
    return rows


def load_average() -> str:
    """The 1, 5 and 15 min load averages, e.g. ``1.98 / 1.73 / 1.43``."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def timing_block(heading: str, times: dict[str, StageTimes], *, peer: str, batch_size: int,
                 device: torch.device) -> list[str]:
    """Markdown lines of one setting: ``heading``, then :func:`ratio_lines` and :func:`stage_lines`."""
    return [heading, "", *ratio_lines(times, peer=peer, batch_size=batch_size, device=device), "",
            *stage_lines(times, batch_size=batch_size, device=device), ""]


def stage_lines(times: dict[str, StageTimes], *, batch_size: int, device: torch.device) -> list[str]:
    """Markdown table rows: median ms per image of every stage of every pipeline (CPU time on the CPU, wall time
    of the synchronised stage on a GPU)."""
    clock = "wall" if device.type == "cuda" else "cpu"
    names = next(iter(times.values())).names
    rows = ["| pipeline | " + " | ".join(f"{s} ({clock} ms/img)" for s in names) + " |",
            "|---|" + "---:|" * len(names)]
    for name, t in times.items():
        rows.append(f"| {name} | " + " | ".join(f"{1000 * t.median(s, clock) / batch_size:.2f}"
                                                for s in t.names) + " |")
    return rows


def cuda_memory_lines(pipelines: dict[str, tuple[list[Stage], object]], modules: dict[str, torch.nn.Module],
                      *, device: torch.device) -> list[str]:
    """Markdown table rows: each contender's GPU memory, measured alone over one more run of its stages.

    "held" = bytes of tensors allocated before the run (every contender's weights, optimizer state and inputs
    share the card, so the absolute peak would mix them up); "peak during run" = the run's
    ``max_memory_allocated`` minus "held"; ``modules[name]``'s parameters and buffers are listed for reference.
    Call after the timed runs, so that cudnn's autotuning workspaces are not counted.
    """
    rows = ["| pipeline | weights (MiB) | peak during run, above held (MiB) |", "|---|---:|---:|"]
    for name, (stages, value) in pipelines.items():
        torch.cuda.synchronize(device)
        held = torch.cuda.memory_allocated(device)
        with PeakMemory(device) as memory:
            run_stages(stages, value)
        weights = sum(t.numel() * t.element_size() for t in [*modules[name].parameters(), *modules[name].buffers()])
        rows.append(f"| {name} | {weights / 2**20:.1f} | {(memory.peak_bytes - held) / 2**20:.1f} |")
    return rows


def write_report(args: argparse.Namespace, *, name: str, title: str, body: list[str]) -> Path:
    """Print the snippet and write it to ``args.md`` (default benchmarks/results/<name>[_cuda][_quick].md); the
    title gets the device kind appended."""
    command = "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    on_gpu = args.device.type == "cuda"
    lines = [f"### {title} ({'GPU' if on_gpu else 'CPU'})", "", *[f"- {line}" for line in args.environment],
             f"- load average at the end: {load_average()}", f"- command: `{command}`", "", *body, ""]
    text = "\n".join(lines)
    print(text)
    suffix = ("_cuda" if on_gpu else "") + ("_quick" if args.quick else "")
    path = args.md or REPO / "benchmarks/results" / f"{name}{suffix}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return path
