"""Training logs: a tqdm bar on rank 0 (ETA, loss, lr), ``log.jsonl`` and TensorBoard scalars.

Logging failures are loud: a jsonl or TensorBoard write that fails raises instead of being swallowed, because a
run whose logs silently stopped is worse than a run that stops.

Nothing is created in the work dir before the first record, so that a run refused while it is being set up (e.g.
an incompatible ``--resume``) leaves no trace. Train records come every ``log_interval`` iterations (the means of
the iterations since the previous record) and once more at ``close`` for a last partial window; a resumed run
gets the partial window back from the checkpoint (``state_dict`` / ``resume``), so its records equal those of an
uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from tqdm import tqdm

__all__ = ["TrainLogger", "LOG_FILE", "TENSORBOARD_DIR"]

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"


class TrainLogger:
    """Collects per-iteration scalars and writes their means every ``log_interval`` iterations.

    Args:
        work_dir: receives ``log.jsonl`` and ``tensorboard/`` (created at the first record).
        enabled: False on ranks other than 0 (nothing is written, no bar).
        max_iters: total iterations of the run (bar length, ETA).
        log_interval: iterations between jsonl/TensorBoard train records; the bar shows means over the window.
        tensorboard: write TensorBoard event files.
    """

    def __init__(self, *, work_dir: str | Path, enabled: bool, max_iters: int, log_interval: int,
                 tensorboard: bool = True):
        self.work_dir = Path(work_dir)
        self.enabled = enabled
        self.max_iters = max_iters
        self.log_interval = max(1, log_interval)
        self.tensorboard = tensorboard
        self._window: dict[str, list[float]] = {}  # scalars of the iterations since the last train record
        self._epoch, self._lr = 0, 0.0  # of the last finished iteration: the labels of the window's record
        self._bar = None
        self._jsonl = None
        self._tb = None
        self._step_start = time.perf_counter()
        self._start_iter = 0
        self._iteration = 0  # last finished iteration: the step of images logged between iterations

    def resume(self, iteration: int, state: dict | None) -> None:
        """Continue after ``iteration`` with the partial window ``state`` (``state_dict()`` of the interrupted run;
        None: empty). Records of the work dir's log the resumed run writes again are dropped: every record after
        ``iteration``, and the train record of the partial window (written when the interrupted run closed)."""
        if self._jsonl is not None:
            raise RuntimeError("TrainLogger.resume must come before the first record")
        state = state or {"window": {}, "epoch": 0, "lr": 0.0}
        self._start_iter = self._iteration = iteration
        self._window = {key: list(values) for key, values in state["window"].items()}
        self._epoch, self._lr = state["epoch"], state["lr"]

    def state_dict(self) -> dict:
        """The partial window (scalars of the iterations since the last train record) and its labels."""
        return {"window": {key: list(values) for key, values in self._window.items()}, "epoch": self._epoch,
                "lr": self._lr}

    def log_step(self, *, iteration: int, epoch: int, scalars: dict[str, float], lr: float) -> None:
        """Record one finished iteration (``iteration`` counts from 1); writes every ``log_interval``."""
        if not self.enabled:
            return
        self._open()
        self._iteration, self._epoch, self._lr = iteration, epoch, lr
        now = time.perf_counter()
        scalars = {**scalars, "time": now - self._step_start}
        self._step_start = now
        for key, value in scalars.items():
            self._window.setdefault(key, []).append(float(value))
        means = self._means()
        self._bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}", epoch=epoch,
                              refresh=False)
        self._bar.update(1)
        if iteration % self.log_interval == 0:
            self.flush()

    def flush(self) -> None:
        """Write the means of the iterations since the last train record as a record at the last iteration."""
        if not (self.enabled and self._window):
            return
        means = self._means()
        self.write({"mode": "train", "iter": self._iteration, "epoch": self._epoch, "lr": self._lr, **means})
        self._scalars("train", {**means, "lr": self._lr}, self._iteration)
        self._window = {}

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
        if not (self.enabled and self.tensorboard):
            return
        from gfldet.analysis import log_prediction_images

        self._open()
        log_prediction_images(self._tb, images, self._iteration)

    def event(self, message: str, *, iteration: int, **fields) -> None:
        """A notable event (NaN step skipped, checkpoint, resume): printed above the bar and logged to jsonl."""
        if not self.enabled:
            return
        tqdm.write(f"[gfldet] iter {iteration}: {message}")
        self.write({"mode": "event", "iter": iteration, "message": message, **fields})

    def write(self, record: dict) -> None:
        if self.enabled:
            self._open()
            self._jsonl.write(json.dumps(record) + "\n")

    def _open(self) -> None:
        """Create the log files at the first record: drop what a resume replaces, then append."""
        if self._jsonl is not None:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self._start_iter:
            _drop_replayed_records(self.work_dir / LOG_FILE, self._start_iter, self._window_size())
        self._jsonl = open(self.work_dir / LOG_FILE, "a", buffering=1)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # ImportError is loud on purpose

            # purge_step: TensorBoard hides the events of an interrupted run after the resumed iteration
            self._tb = SummaryWriter(log_dir=str(self.work_dir / TENSORBOARD_DIR),
                                     purge_step=self._start_iter + 1 if self._start_iter else None)
        self._bar = tqdm(total=self.max_iters, initial=self._start_iter, desc="train", dynamic_ncols=True, unit="it")

    def _window_size(self) -> int:
        """Iterations in the window."""
        return max(map(len, self._window.values()), default=0)

    def _means(self) -> dict[str, float]:
        return {key: _finite_mean(values) for key, values in self._window.items()}

    def _scalars(self, prefix: str, values: dict, step: int) -> None:
        if self._tb is None:
            return
        for key, value in values.items():
            self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        """Write the last partial window, then close the bar and the files."""
        self.flush()
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _drop_replayed_records(path: Path, iteration: int, window: int) -> None:
    """Rewrite the jsonl log ``path`` without the records a run resumed after ``iteration`` writes again: those
    after ``iteration``, and train records after the last full window (``window``: iterations since it)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _kept(line, iteration, window)]
    if len(kept) < len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def _kept(line: str, iteration: int, window: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # the last line of a run killed while writing it
        return False
    last = iteration - window if record["mode"] == "train" else iteration
    return record["iter"] <= last


def _finite_mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")
