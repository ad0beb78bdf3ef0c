"""Checkpoints: atomic writes, ``latest.pth`` / ``epoch_N.pth`` / ``iter_N.pth`` / ``best.pth``, keep the last K.

A checkpoint is a dict: ``model`` (state dict, DDP prefix stripped), ``optimizer``, ``lr_scheduler``, ``scaler``,
``ema``, ``meta`` (epoch, iteration, iter_in_epoch, best metric, config, and the batch layout: world_size,
batch_size per process, accumulate, iters_per_epoch), ``rng`` (python/numpy/torch/cuda states) and ``logger``
(the partial logging window). Only rank 0 writes.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gfldet.errors import GfldetError

__all__ = ["atomic_save", "Checkpointer", "load_checkpoint", "load_training_checkpoint", "TRAINING_STATE_KEYS",
           "capture_rng_state", "restore_rng_state", "checkpoint_weights", "load_model_weights"]


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace`` onto ``path``.

    A crash at any point leaves either the previous file or the complete new one at ``path``, never a partial one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the renames and links in ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _atomic_alias(src: Path, dst: Path) -> None:
    """Make ``dst`` a complete copy of ``src`` atomically: a hard link when the filesystem allows (no second
    write of a large file), else a copy; either goes to a temporary name first, then ``os.replace``."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    _fsync_directory(dst.parent)


def capture_rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file onto the CPU; a missing or unreadable file raises a GfldetError naming it."""
    path = Path(path)
    if not path.is_file():
        raise GfldetError(f"checkpoint not found: {path}")
    try:
        # weights_only=False: our own checkpoints hold numpy RNG state and the config as plain Python objects.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which one
        raise GfldetError(f"cannot read checkpoint {path}: {err}") from err


# What a checkpoint written by gfldet training holds besides the optional ema and logger: resume needs them all.
TRAINING_STATE_KEYS = ("model", "optimizer", "lr_scheduler", "scaler", "meta", "rng")


def load_training_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint to resume from: one written by gfldet training, else a GfldetError naming the file and
    what such a checkpoint holds."""
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and all(key in ckpt for key in TRAINING_STATE_KEYS):
        return ckpt
    held = f"keys {', '.join(map(str, list(ckpt)[:6]))}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
    raise GfldetError(f"{path} is not a gfldet training checkpoint: it holds {held}, not "
                      f"{', '.join(TRAINING_STATE_KEYS)}; resume from a work dir's latest.pth or epoch_N.pth, or "
                      f"initialise the weights only with --load-from")


def checkpoint_weights(ckpt) -> dict:
    """The model state dict of a loaded checkpoint: its EMA weights when it has them (those are the ones
    evaluated and kept as best), else ``model``; a bare state dict is returned as it is."""
    if not isinstance(ckpt, dict):
        raise GfldetError(f"a checkpoint must be a dict, got {type(ckpt).__name__}")
    if ckpt.get("ema"):
        # AveragedModel's state: "module.<name>" per tensor plus its "n_averaged" counter.
        return {k[len("module."):]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    return ckpt.get("model", ckpt)


def load_model_weights(model: torch.nn.Module, path: str | Path, *, strict: bool = True) -> dict:
    """Load the weights of a checkpoint (gfldet's, EMA preferred, or a bare state dict) into ``model``.

    ``strict=False`` (fine-tuning) skips missing and unexpected tensors and those whose shapes differ (e.g. the
    class conv of a model trained with another number of classes), and prints what it skipped; a checkpoint that
    fills fewer than half of the model's tensors (another architecture) is a GfldetError, not a silent training
    from scratch. Returns the loaded checkpoint.
    """
    ckpt = load_checkpoint(path)
    state = checkpoint_weights(ckpt)
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if strict and mismatched:
        raise GfldetError(f"{path} does not fit the model: {_shape_changes(mismatched, state, own)}")
    try:
        result = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=strict)
    except RuntimeError as err:
        raise GfldetError(f"{path} does not fit the model: {err}") from None
    missing = [k for k in result.missing_keys if k not in mismatched]  # those of another shape are listed apart
    _require_most_loaded(path, loaded=sum(k in own and k not in mismatched for k in state), total=len(own),
                         missing=missing, unexpected=result.unexpected_keys)
    skipped = [f"missing {missing[:5]}" if missing else "",
               f"unexpected {result.unexpected_keys[:5]}" if result.unexpected_keys else "",
               f"other shape {_shape_changes(mismatched, state, own)}" if mismatched else ""]
    if any(skipped):
        print(f"[gfldet] {path}: not loaded: {'; '.join(filter(None, skipped))}")
    return ckpt


def _require_most_loaded(path: str | Path, *, loaded: int, total: int, missing: list[str],
                         unexpected: list[str]) -> None:
    """Refuse a checkpoint that fills fewer than half of the model's tensors: a fine-tuning start differs in a few
    tensors (the class conv), another architecture in most."""
    if 2 * loaded >= total:
        return
    raise GfldetError(f"{path} fits only {loaded} of the model's {total} tensors (missing {missing[:3]}, "
                      f"unexpected {unexpected[:3]}): is it a checkpoint of this architecture (model section)?")


def _shape_changes(keys: list[str], state: dict, own: dict) -> str:
    shown = ", ".join(f"{k} {list(state[k].shape)} -> {list(own[k].shape)}" for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


class Checkpointer:
    """Writes the work dir's checkpoints and prunes old periodic ones.

    Args:
        work_dir: directory receiving ``latest.pth``, ``best.pth`` and ``{unit}_{N}.pth`` files.
        keep_last: how many periodic ``{unit}_N.pth`` files to keep (0 or less keeps all).
    """

    _PERIODIC = re.compile(r"^(epoch|iter)_(\d+)\.pth$")

    def __init__(self, *, work_dir: str | Path, keep_last: int):
        self.work_dir = Path(work_dir)
        self.keep_last = keep_last

    def save(self, state: dict, *, periodic_name: str | None = None, is_best: bool = False) -> None:
        """Write ``state`` to ``latest.pth`` (always), to ``periodic_name`` (e.g. ``epoch_3.pth``) and ``best.pth``."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        latest = self.work_dir / "latest.pth"
        atomic_save(state, latest)
        if periodic_name is not None:
            _atomic_alias(latest, self.work_dir / periodic_name)
            self._prune()
        if is_best:
            _atomic_alias(latest, self.work_dir / "best.pth")

    def periodic_files(self) -> list[Path]:
        """Existing ``epoch_N.pth`` / ``iter_N.pth`` files, oldest (smallest N) first."""
        found = [(int(m.group(2)), p) for p in self.work_dir.glob("*.pth") if (m := self._PERIODIC.match(p.name))]
        return [p for _, p in sorted(found)]

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        for path in self.periodic_files()[:-self.keep_last]:
            path.unlink()
