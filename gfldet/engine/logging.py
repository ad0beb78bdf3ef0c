"""Training logs: a tqdm bar on rank 0 (ETA, loss, lr), ``log.jsonl`` and TensorBoard scalars.

Logging failures are loud: a jsonl or TensorBoard write that fails raises instead of being swallowed, because a
run whose logs silently stopped is worse than a run that stops.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path

from tqdm import tqdm

__all__ = ["TrainLogger"]


class TrainLogger:
    """Collects per-iteration scalars and writes them every ``log_interval`` iterations.

    Args:
        work_dir: receives ``log.jsonl`` and ``tensorboard/``.
        enabled: False on ranks other than 0 (nothing is written, no bar).
        max_iters: total iterations of the run (bar length, ETA).
        start_iter: iterations already done (resume).
        log_interval: iterations between jsonl/TensorBoard records; the bar shows means over this window.
        tensorboard: write TensorBoard event files.
    """

    def __init__(self, *, work_dir: str | Path, enabled: bool, max_iters: int, start_iter: int, log_interval: int,
                 tensorboard: bool = True):
        self.enabled = enabled
        self.log_interval = max(1, log_interval)
        self._window: dict[str, deque] = {}
        self._bar = None
        self._jsonl = None
        self._tb = None
        self._step_start = time.perf_counter()
        self._iteration = start_iter  # last finished iteration: the step of images logged between iterations
        if not enabled:
            return
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(work_dir / "log.jsonl", "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # ImportError is loud on purpose

            self._tb = SummaryWriter(log_dir=str(work_dir / "tensorboard"), purge_step=start_iter or None)
        self._bar = tqdm(total=max_iters, initial=start_iter, desc="train", dynamic_ncols=True, unit="it")

    def log_step(self, *, iteration: int, epoch: int, scalars: dict[str, float], lr: float) -> None:
        """Record one finished iteration (``iteration`` counts from 1); writes every ``log_interval``."""
        if not self.enabled:
            return
        self._iteration = iteration
        now = time.perf_counter()
        scalars = {**scalars, "time": now - self._step_start}
        self._step_start = now
        for key, value in scalars.items():
            self._window.setdefault(key, deque(maxlen=self.log_interval)).append(float(value))
        means = {key: _finite_mean(values) for key, values in self._window.items()}
        self._bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}", epoch=epoch,
                              refresh=False)
        self._bar.update(1)
        if iteration % self.log_interval == 0:
            self.write({"mode": "train", "iter": iteration, "epoch": epoch, "lr": lr, **means})
            self._scalars("train", {**means, "lr": lr}, iteration)

    def log_metrics(self, *, iteration: int, epoch: int, metrics: dict) -> None:
        """Record evaluation metrics (flat floats go to TensorBoard under ``val/``; everything to jsonl)."""
        if not self.enabled:
            return
        self.write({"mode": "val", "iter": iteration, "epoch": epoch, **metrics})
        self._scalars("val", {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, iteration)
        if self._tb is not None:
            self._tb.flush()

    def log_images(self, images) -> None:
        """(image id, RGB uint8 [H, W, 3]) pairs -> TensorBoard ``val/predictions/<id>`` at the current iteration."""
        if self._tb is not None:
            from gfldet.analysis import log_prediction_images

            log_prediction_images(self._tb, images, self._iteration)

    def event(self, message: str, *, iteration: int, **fields) -> None:
        """A notable event (NaN step skipped, checkpoint, resume): printed above the bar and logged to jsonl."""
        if not self.enabled:
            return
        tqdm.write(f"[gfldet] iter {iteration}: {message}")
        self.write({"mode": "event", "iter": iteration, "message": message, **fields})

    def write(self, record: dict) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")

    def _scalars(self, prefix: str, values: dict, step: int) -> None:
        if self._tb is None:
            return
        for key, value in values.items():
            self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _finite_mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")
