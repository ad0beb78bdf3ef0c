"""Timing machinery of ``gfldet benchmark`` and ``benchmarks/``: warm-up, medians of timed runs, stage split, memory.

A *pipeline* is a list of named stages ``(name, fn)``; stage ``k`` receives stage ``k-1``'s output. One *run* calls
every stage once; the device is synchronised after each stage, so the per-stage times add up to the run's time
(on a GPU the extra synchronisations cost a few microseconds each). Several pipelines (gfldet and a peer) are run
*interleaved*, alternating their order every round, so that a change of machine load hits all of them alike; the
figures reported are medians over the timed runs, and ratios are medians of the per-round ratios.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors only, reset before the runs); on the CPU the
growth of the process's peak resident set size (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs`` before the runs; it includes allocator caches and the Python heap). Where that reset is
not possible the growth of ``resource.getrusage().ru_maxrss`` is reported, which is 0 when the process peaked
earlier; :attr:`PeakMemory.method` says which one was used.

Where the time goes: :func:`profile_runs` (torch.profiler: operators by self time, and on a GPU the share of the
wall time its kernels kept it busy, which tells a launch- or host-bound pipeline from a GPU-bound one);
:func:`find_host_syncs` (the source lines where the host waited for the GPU).
"""
from __future__ import annotations

import collections
import contextlib
import datetime
import math
import os
import platform
import resource
import statistics
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from gfldet.data.batching import Batch

__all__ = ["Stage", "StageTimes", "PeakMemory", "synchronize", "synthetic_batch", "run_interleaved", "run_stages",
           "median_ratio", "inference_stages", "training_stages", "count_macs", "stage_table", "profile_runs",
           "find_host_syncs", "cpu_model", "environment_lines"]

Stage = tuple[str, Callable[[Any], Any]]


def synchronize(device: torch.device) -> None:
    """Wait for the queued work of ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StageTimes:
    """Seconds per stage of every timed run: ``wall[r][k]`` (elapsed) and ``cpu[r][k]`` (CPU time of the whole
    process, all threads) of run r, stage k. On a shared machine CPU time is the steadier measure of work done:
    time spent descheduled by other processes does not count (see ``docs/benchmarks.md``)."""

    names: tuple[str, ...]
    wall: list[list[float]] = field(default_factory=list)
    cpu: list[list[float]] = field(default_factory=list)
    last_output: Any = None

    def _samples(self, clock: str) -> list[list[float]]:
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
        return self.wall if clock == "wall" else self.cpu

    def totals(self, clock: str = "wall") -> list[float]:
        """Seconds per run (all stages)."""
        return [sum(run) for run in self._samples(clock)]

    def median_total(self, clock: str = "wall") -> float:
        return statistics.median(self.totals(clock))

    def median(self, name: str, clock: str = "wall") -> float:
        k = self.names.index(name)
        return statistics.median(run[k] for run in self._samples(clock))


def run_interleaved(pipelines: Mapping[str, tuple[Sequence[Stage], Any]], *, runs: int, warmup: int,
                    device: torch.device) -> dict[str, StageTimes]:
    """Time each pipeline ``{name: (stages, first_input)}`` ``runs`` times after ``warmup`` untimed runs.

    The pipelines take turns, in reversed order every other round. Returns ``{name: StageTimes}``.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs} warmup={warmup}")
    times = {name: StageTimes(tuple(stage for stage, _ in stages)) for name, (stages, _) in pipelines.items()}
    order = list(pipelines)
    for round_index in range(warmup + runs):
        for name in order if round_index % 2 == 0 else order[::-1]:
            stages, value = pipelines[name]
            wall, cpu = [], []
            for _, fn in stages:
                start, start_cpu = time.perf_counter(), time.process_time()
                value = fn(value)
                synchronize(device)
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            if round_index >= warmup:
                times[name].wall.append(wall)
                times[name].cpu.append(cpu)
            times[name].last_output = value
    return times


def run_stages(stages: Sequence[Stage], value: Any) -> Any:
    """One untimed run of a pipeline: ``value`` through every stage in turn; returns the last stage's output."""
    for _, fn in stages:
        value = fn(value)
    return value


def median_ratio(numerator: StageTimes, denominator: StageTimes, clock: str = "wall") -> float:
    """Median over rounds of ``numerator`` run time / ``denominator`` run time (same round = same load)."""
    return statistics.median(a / b for a, b in zip(numerator.totals(clock), denominator.totals(clock)))


class PeakMemory:
    """Context manager measuring the peak memory of the code inside it (see the module docstring).

    After exit: ``peak_bytes`` and ``method`` (a short description of what was measured).
    """

    _STATUS = Path("/proc/self/status")
    _CLEAR_REFS = Path("/proc/self/clear_refs")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self.method = ""
        self._start = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = 0
            self.method = "torch.cuda.max_memory_allocated (tensors)"
        elif self._reset_hwm():
            self._start = self._status_kib("VmRSS") * 1024
            self.method = "CPU peak RSS growth (VmHWM after a clear_refs reset, minus RSS before)"
        else:
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.method = "CPU ru_maxrss growth (0 if the process peaked earlier)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("CPU peak RSS"):
            self.peak_bytes = max(0, self._status_kib("VmHWM") * 1024 - self._start)
        else:
            self.peak_bytes = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._start)

    def _reset_hwm(self) -> bool:
        try:
            self._CLEAR_REFS.write_text("5")  # "5" resets the peak RSS counter (Linux >= 4.0)
            return self._status_kib("VmHWM") > 0
        except OSError:
            return False

    def _status_kib(self, key: str) -> int:
        for line in self._STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0


def synthetic_batch(*, batch_size: int, height: int, width: int, num_classes: int, gts_per_image: int = 8,
                    size_divisor: int = 32, seed: int = 0, device: torch.device | str = "cpu") -> Batch:
    """A random batch: images [N, 3, H', W'] ~ N(0, 1) (already "normalised"), H', W' = (height, width) rounded
    up to ``size_divisor`` and zero-padded; per image ``gts_per_image`` random GT boxes [G, 4] xyxy px inside the
    (height, width) image, sides between 16 px and half the image, labels uniform in 0..C-1; scale factors 1."""
    gen = torch.Generator().manual_seed(seed)
    pad_h, pad_w = (math.ceil(s / size_divisor) * size_divisor for s in (height, width))
    images = torch.zeros(batch_size, 3, pad_h, pad_w)
    images[:, :, :height, :width] = torch.randn(batch_size, 3, height, width, generator=gen)
    limit = torch.tensor([width, height], dtype=torch.float32)
    boxes, labels = [], []
    for _ in range(batch_size):
        wh = 16 + torch.rand(gts_per_image, 2, generator=gen) * (limit / 2 - 16).clamp(min=0)
        top_left = torch.rand(gts_per_image, 2, generator=gen) * (limit - wh)
        boxes.append(torch.cat([top_left, top_left + wh], dim=1))
        labels.append(torch.randint(0, num_classes, (gts_per_image,), generator=gen))
    return Batch(images=images, image_sizes=[(height, width)] * batch_size,
                 scale_factors=[(1.0, 1.0)] * batch_size, original_sizes=[(height, width)] * batch_size,
                 gt_boxes=boxes, gt_labels=labels, ignore_boxes=[torch.zeros(0, 4)] * batch_size,
                 image_ids=list(range(batch_size)), file_names=[""] * batch_size).to(device)


def _under(fn: Callable[[Any], Any], *contexts: Callable[[], Any]) -> Callable[[Any], Any]:
    """``fn`` run inside fresh instances of ``contexts`` (e.g. inference_mode, autocast) at every call."""
    def wrapped(value):
        with contextlib.ExitStack() as stack:
            for context in contexts:
                stack.enter_context(context())
            return fn(value)
    return wrapped


def inference_stages(model: torch.nn.Module, batch: Batch, *,
                     autocast: Callable[[], Any]) -> list[Stage]:
    """Stages of ``model.predict`` on ``batch`` (input: the images): backbone+neck, head, postprocess.

    Each runs under ``torch.inference_mode`` and ``autocast()``; ``model`` must be in eval mode.
    """
    sizes, scales = batch.image_sizes, batch.scale_factors
    stages = [("backbone+neck", lambda images: model.neck(model.backbone(images))),
              ("head", model.head),
              ("postprocess", lambda outputs: model.head.predict(*outputs, sizes, scales))]
    return [(name, _under(fn, torch.inference_mode, autocast)) for name, fn in stages]


def training_stages(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, *,
                    autocast: Callable[[], Any], scaler: torch.amp.GradScaler) -> list[Stage]:
    """Stages of one SGD step on ``batch`` (input: the images): forward (raw outputs), loss (assignment, targets,
    losses), backward, optimizer (step, scaler update, zero_grad). ``model`` must be in train mode."""
    def loss(outputs):
        losses = model.head.loss(*outputs, batch.gt_boxes, batch.gt_labels, batch.image_sizes)
        return sum(losses.values())

    def step(_):
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return [("forward", _under(model.raw_outputs, autocast)), ("loss", _under(loss, autocast)),
            ("backward", lambda total: scaler.scale(total).backward()), ("optimizer", step)]


def count_macs(fn: Callable[[], Any]) -> int:
    """Multiply-accumulates of one call of ``fn`` (under no_grad) in its convolutions (deformable ones included)
    and matrix products.

    ``torch.utils.flop_counter`` counts 2 FLOPs per multiply-accumulate; the MAC count is what mmdetection's
    ``get_flops``, torchvision's model tables ("GFLOPS" 4.09 for ResNet-50 at 224x224) and most detection papers
    report as FLOPs. Norms, activations, element-wise operations and the bilinear sampling of deformable
    convolutions are not counted.
    """
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)
    from torch.utils.flop_counter import FlopCounterMode

    # torch has no formula for torchvision's deformable convolution (it would count 0)
    mapping = {torch.ops.torchvision.deform_conv2d: _deform_conv2d_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops() // 2


def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape, **kwargs) -> int:
    """FLOPs of ``torchvision::deform_conv2d``: those of a convolution of the same weight and output (2 per MAC)."""
    batch, out_channels, height, width = out_shape
    return 2 * batch * out_channels * height * width * math.prod(weight_shape[1:])


def _row(name: str, wall_s: float, share: str, cpu_s: float, batch_size: int) -> str:
    """One table line: seconds per batch -> ms per image."""
    return f"{name:<16}{1000 * wall_s / batch_size:>10.1f}{share:>8}{1000 * cpu_s / batch_size:>12.1f}"


def stage_table(times: StageTimes, *, batch_size: int) -> list[str]:
    """Lines of a per-stage table: median wall ms per image of each stage, its share of the sum of the stage
    medians (the shares add up to 100 %), median CPU ms per image; then that sum, the run total (median of the
    per-run totals: not the sum of the medians; the images/s come from it), a line saying so, and images/s."""
    walls = {name: times.median(name) for name in times.names}
    cpus = {name: times.median(name, "cpu") for name in times.names}
    stage_sum = sum(walls.values())
    lines = [f"{'stage':<16}{'ms/img':>10}{'share':>8}{'cpu ms/img':>12}"]
    lines += [_row(name, wall, f"{100 * wall / stage_sum:.0f}%", cpus[name], batch_size)
              for name, wall in walls.items()]
    lines.append(_row("sum of stages", stage_sum, "100%", sum(cpus.values()), batch_size))
    lines.append(_row("run total", times.median_total(), "", times.median_total("cpu"), batch_size))
    lines.append(f"(stages: median of each over {len(times.wall)} timed runs, shares of their sum; run total: "
                 f"median of the whole-run times, which gives images/s)")
    lines.append(f"throughput: {batch_size / times.median_total():.2f} images/s")
    return lines


def profile_runs(stages: Sequence[Stage], first_input: Any, *, device: torch.device, runs: int = 3,
                 top: int = 20, trace_path: str | os.PathLike | None = None) -> list[str]:
    """Lines of a report on ``runs`` runs of the pipeline under ``torch.profiler``: the ``top`` operators by self
    time (GPU time on a GPU, CPU time on the CPU) and, on a GPU, the share of the wall time during which its
    kernels ran (well under 100 %: the GPU waits for the host: launch overhead, synchronisations). With
    ``trace_path``, also a Chrome trace (open in https://ui.perfetto.dev or chrome://tracing)."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
    synchronize(device)
    with warnings.catch_warnings(), profile(activities=activities) as prof:
        warnings.filterwarnings("ignore", message=".*Profiler clears events")  # torch 2.11 says so on every stop
        start = time.perf_counter()
        for _ in range(runs):
            run_stages(stages, first_input)
        synchronize(device)
        wall_us = (time.perf_counter() - start) * 1e6
    if trace_path is not None:
        prof.export_chrome_trace(str(trace_path))
    events = prof.key_averages()
    lines = events.table(sort_by="self_device_time_total" if on_gpu else "self_cpu_time_total",
                         row_limit=top).splitlines()
    if on_gpu:
        busy_us = sum(e.self_device_time_total for e in events)
        lines.append(f"GPU kernels busy {100 * busy_us / wall_us:.0f}% of the wall time of {runs} runs "
                     f"({busy_us / 1e3 / runs:.1f} of {wall_us / 1e3 / runs:.1f} ms per run)")
    return lines


_SYNC_WARNING = "synchroniz"  # torch.cuda.set_sync_debug_mode("warn"): "called a synchronizing CUDA operation"


def find_host_syncs(stages: Sequence[Stage], first_input: Any, *, device: torch.device) -> collections.Counter:
    """Run the pipeline once under ``torch.cuda.set_sync_debug_mode("warn")``; returns ``{source line: count}``
    of the operations that made the host wait for the GPU (``.item()``, ``nonzero``, copies to the host...).
    A source line is ``file:line (function)`` of the innermost gfldet frame on the Python stack at the time (the
    innermost frame of any file when no gfldet code is on it, as for a peer). Not counted: waits inside C++
    extension operators (torchvision's ``nms`` copies its mask to the host once per call), which torch reports
    on stderr rather than as Python warnings."""
    found: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        if _SYNC_WARNING in str(message):
            found[_source_line(traceback.extract_stack()[:-1])] += 1

    synchronize(device)
    with warnings.catch_warnings():  # restores warnings.showwarning on exit
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_stages(stages, first_input)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    synchronize(device)
    return found


def _source_line(stack: traceback.StackSummary) -> str:
    """The innermost frame of ``stack`` in gfldet's code (else the innermost frame), leaving out the warnings
    machinery and the frames that only run the pipeline (the stages' own code, e.g. ``training_stages``' backward,
    does count)."""
    package, here = Path(__file__).resolve().parents[1], Path(__file__).resolve()
    frames = [(f, Path(f.filename).resolve()) for f in stack]
    frames = [(f, path) for f, path in frames if path != Path(warnings.__file__).resolve()
              and not (path == here and f.name in ("run_stages", "find_host_syncs", "record"))]
    own = [(f, path) for f, path in frames if path.is_relative_to(package)]
    frame, path = (own or frames)[-1]
    shown = path.relative_to(package.parent) if own else path.name
    return f"{shown}:{frame.lineno} ({frame.name})"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment_lines(device: torch.device) -> list[str]:
    """Machine, versions and date, for benchmark reports."""
    import torchvision

    if device.type == "cuda":
        machine = f"GPU {torch.cuda.get_device_name(device)}, CPU {cpu_model()}"
    else:
        machine = (f"CPU {cpu_model()} (vector capability {torch.backends.cpu.get_cpu_capability()}, "
                   f"{os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [f"machine: {machine}",
            f"versions: python {platform.python_version()}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}",
            f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average (1/5/15 min) "
            f"at the start: {load}"]
