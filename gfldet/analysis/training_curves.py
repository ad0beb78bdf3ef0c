"""Training curves from one or several work dirs' ``log.jsonl``: losses, learning rate and validation AP.

``log.jsonl`` (written by gfldet.engine.logging) holds one JSON object per line: ``{"mode": "train", "iter",
"epoch", "lr", "loss", "loss_cls", ...}`` every ``log_interval`` iterations (means over that window),
``{"mode": "val", "iter", "epoch", "bbox_mAP", "bbox_mAP_50", ...}`` after each evaluation, and ``{"mode":
"event", ...}``. A resumed run appends to the same file; for an iteration logged twice the later record wins.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure

from gfldet.analysis.figures import save_figure
from gfldet.errors import GfldetError

__all__ = ["RunLog", "read_log", "plot_training_curves"]

AP_KEYS = (("bbox_mAP", "-"), ("bbox_mAP_50", "--"))
PANEL_INCHES, COLUMNS, DPI = (4.0, 3.0), 3, 100


@dataclass(frozen=True)
class RunLog:
    """The records of one run, sorted by iteration: ``train`` and ``val`` lists of dicts."""

    name: str
    train: list[dict]
    val: list[dict]


def read_log(work_dir: str | Path, *, name: str | None = None) -> RunLog:
    """Read ``work_dir/log.jsonl``; GfldetError naming file and line on a missing file or a malformed record."""
    path = Path(work_dir) / "log.jsonl"
    if not path.is_file():
        raise GfldetError(f"{path} not found: expected a gfldet work dir (the --work-dir of `gfldet train`)")
    by_mode: dict[str, dict[int, dict]] = {"train": {}, "val": {}}
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise GfldetError(f"{path}:{line_no}: not a JSON record ({err.msg})") from err
        if not isinstance(record, dict) or "iter" not in record:
            raise GfldetError(f"{path}:{line_no}: expected an object with 'mode' and 'iter', got {line[:80]!r}")
        if record.get("mode") in by_mode:
            by_mode[record["mode"]][int(record["iter"])] = record
    if not by_mode["train"] and not by_mode["val"]:
        raise GfldetError(f"{path}: no train or val records yet")
    return RunLog(name=name or Path(work_dir).resolve().name,
                  **{mode: [records[i] for i in sorted(records)] for mode, records in by_mode.items()})


def _loss_keys(runs: Sequence[RunLog]) -> list[str]:
    """``loss`` (the total) first, then every other ``loss*`` key found in any run, sorted."""
    keys = {key for run in runs for record in run.train for key in record if key.startswith("loss")}
    return sorted(keys, key=lambda k: (k != "loss", k))


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["iter"], float(r[key])) for r in records if isinstance(r.get(key), (int, float))]
    points = [(i, v) for i, v in points if math.isfinite(v)]
    return [i for i, _ in points], [v for _, v in points]


def plot_training_curves(work_dirs: Sequence[str | Path], out_path: str | Path, *,
                         names: Sequence[str] | None = None) -> Path:
    """One PNG with a panel per loss component, the learning rate and validation AP (mAP solid, mAP@50 dashed;
    left out when no run logged an evaluation); each run in its own colour. x axis: iteration. Size: 3 panels of 400x300 px per row at 100 dpi.

    names: legend label of each run (default: the work dir's folder name). Returns ``out_path``.
    """
    if names is not None and len(names) != len(work_dirs):
        raise GfldetError(f"{len(names)} names for {len(work_dirs)} work dirs")
    runs = [read_log(d, name=names[i] if names else None) for i, d in enumerate(work_dirs)]
    panels = [(key, key, False) for key in _loss_keys(runs)] + [("lr", "learning rate", True)]
    if any(_series(run.val, AP_KEYS[0][0])[0] for run in runs):  # runs trained without evaluation get no AP panel
        panels.append(("AP", "val AP", False))
    rows = math.ceil(len(panels) / COLUMNS)
    fig = Figure(figsize=(PANEL_INCHES[0] * COLUMNS, PANEL_INCHES[1] * rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, COLUMNS, squeeze=False, sharex=True).ravel()  # one iteration range everywhere
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for index, (ax, (key, title, log_scale)) in enumerate(zip(axes, panels)):
        for run, colour in zip(runs, colours):
            if key == "AP":
                for ap_key, style in AP_KEYS:
                    ax.plot(*_series(run.val, ap_key), style, color=colour, marker="o", markersize=3,
                            label=f"{run.name} {ap_key}")
            else:
                ax.plot(*_series(run.train, key), color=colour, linewidth=1.2, label=run.name)
        ax.set(title=title, yscale="log" if log_scale else "linear")
        ax.grid(alpha=0.3)
        if index + COLUMNS >= len(panels):  # nothing drawn below: this panel carries the x axis
            ax.set_xlabel("iteration")
            ax.xaxis.set_tick_params(labelbottom=True)
    axes[0].legend(fontsize="small")
    if panels[-1][0] == "AP":
        axes[len(panels) - 1].legend(fontsize="x-small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return save_figure(fig, out_path)
