"""Our numbers beside the paper's: one markdown + CSV table per paper table from trained work dirs.

A work dir belongs to paper rows through the top-level ``ablation: {table: 1a, row: atss_iou_branch}`` key (or a
list of such mappings, when one model is a row of several tables) of its ``config.yaml`` (the merged config
``gfldet train`` saves); its numbers come from ``metrics.json`` (``gfldet test``:
``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s``, ``bbox_mAP_m``, ``bbox_mAP_l`` in [0, 1]) and,
optionally, FPS from ``benchmark.json["images_per_s"]`` (``gfldet benchmark CONFIG --ckpt ... --json
WORK_DIR/benchmark.json``). APs are reported in percent; COCO's -1 (no ground truth of that size, e.g. AP_l of a
val set without large objects) is shown as '-'. Every row of a reported table appears: rows without a work dir are
"missing", work dirs without metrics "not evaluated".
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from gfldet.config import nearest
from gfldet.engine.paper_numbers import PAPER_TABLES, PaperRow, PaperTable
from gfldet.errors import GfldetError

__all__ = ["ReportError", "Run", "ReportRow", "read_run", "collect_rows", "format_markdown", "write_csv",
           "write_report", "ablation_rows", "configs_for_tables", "METRIC_COLUMNS"]

# metrics.json key -> column name
METRIC_COLUMNS = {"bbox_mAP": "AP", "bbox_mAP_50": "AP50", "bbox_mAP_75": "AP75", "bbox_mAP_s": "APs",
                  "bbox_mAP_m": "APm", "bbox_mAP_l": "APl"}
STATUS_OK, STATUS_MISSING, STATUS_NOT_EVALUATED = "ok", "missing", "not evaluated"


class ReportError(GfldetError):
    """A work dir that cannot be reported (no config, no or a wrong ``ablation`` key, unreadable metrics)."""


@dataclass(frozen=True)
class Run:
    """A work dir identified as paper row ``(table, row)``; ``ap`` maps column names (AP, AP50, ...) to percent
    (None where COCO has no data), and is None when the run has no metrics.json yet."""

    work_dir: Path
    table: str
    row: str
    ap: dict[str, float | None] | None
    fps: float | None


@dataclass(frozen=True)
class ReportRow:
    """One line of a report table: the paper's row and our run of it (``run`` None = missing)."""

    row: str
    paper: PaperRow
    run: Run | None

    @property
    def status(self) -> str:
        if self.run is None:
            return STATUS_MISSING
        return STATUS_OK if self.run.ap is not None else STATUS_NOT_EVALUATED

    @property
    def difference(self) -> float | None:
        """Our AP minus the paper's, in AP points (None without our AP)."""
        if self.run is None or self.run.ap is None or self.run.ap["AP"] is None:
            return None
        return self.run.ap["AP"] - self.paper.ap


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read JSON: {err}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def ablation_rows(ablation, where: str) -> list[tuple[str, str]]:
    """The ``(table, row)`` pairs of a config's ``ablation`` value (one ``{table, row}`` mapping or a list of them,
    for a model that is a row of several tables), validated against PAPER_TABLES."""
    entries = ablation if isinstance(ablation, list) else [ablation]
    pairs = []
    for entry in entries:
        if not isinstance(entry, dict) or not {"table", "row"} <= set(entry):
            raise ReportError(f"{where}: 'ablation' must be {{table: ..., row: ...}} or a list of them, got "
                              f"{ablation!r} (configs under configs/ablations/ have one)")
        table, row = str(entry["table"]), str(entry["row"])
        if table not in PAPER_TABLES:
            hint = nearest(table, PAPER_TABLES)
            raise ReportError(f"{where}: ablation table '{table}' is not a paper table"
                              f"{f'; did you mean {hint!r}?' if hint else ''} (tables: {', '.join(PAPER_TABLES)})")
        rows = PAPER_TABLES[table].rows
        if row not in rows:
            hint = nearest(row, rows)
            raise ReportError(f"{where}: ablation row '{row}' is not a row of table {table}"
                              f"{f'; did you mean {hint!r}?' if hint else ''} (rows: {', '.join(rows)})")
        pairs.append((table, row))
    return pairs


def _identity(config_path: Path) -> list[tuple[str, str]]:
    """The paper rows of a saved config (its ``ablation`` key)."""
    try:
        cfg = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"{config_path}: cannot read the config: {err}") from None
    if not isinstance(cfg, dict) or "ablation" not in cfg:
        raise ReportError(f"{config_path}: no 'ablation: {{table: ..., row: ...}}' key, so the run matches no "
                          f"paper row (configs under configs/ablations/ have one)")
    return ablation_rows(cfg["ablation"], str(config_path))


def _metrics(metrics_path: Path) -> dict[str, float | None]:
    """Column name -> AP in percent; None for COCO's -1 ('no data': no ground truth of that size)."""
    metrics = _read_json(metrics_path)
    missing = [key for key in METRIC_COLUMNS if not isinstance(metrics.get(key), (int, float))]
    if missing:
        raise ReportError(f"{metrics_path}: missing or non-numeric key(s) {', '.join(missing)} "
                          f"(expected the COCO numbers gfldet test writes, in [0, 1])")
    return {column: 100.0 * float(metrics[key]) if metrics[key] >= 0 else None
            for key, column in METRIC_COLUMNS.items()}


def _fps(work_dir: Path) -> float | None:
    path = work_dir / "benchmark.json"
    value = _read_json(path).get("images_per_s") if path.is_file() else None
    return float(value) if isinstance(value, (int, float)) else None


def read_run(work_dir: str | Path) -> list[Run]:
    """Identify and read one work dir (``config.yaml`` required, ``metrics.json`` optional): one Run per paper
    row the config names."""
    work_dir = Path(work_dir)
    config_path = work_dir / "config.yaml"
    if not config_path.is_file():
        raise ReportError(f"{work_dir}: no config.yaml (is this a gfldet work dir? gfldet train writes one)")
    pairs = _identity(config_path)
    metrics_path = work_dir / "metrics.json"
    ap = _metrics(metrics_path) if metrics_path.is_file() else None
    fps = _fps(work_dir)
    return [Run(work_dir=work_dir, table=table, row=row, ap=ap, fps=fps) for table, row in pairs]


def collect_rows(runs: Iterable[Run], tables: Sequence[str] | None = None) -> dict[str, list[ReportRow]]:
    """Report rows per table, in the paper's row order.

    tables: the tables to report (default: those with at least one run). Every paper row of a reported table
    appears once per run of it, or once as missing.
    """
    runs = list(runs)
    keys = list(tables) if tables else [key for key in PAPER_TABLES if any(run.table == key for run in runs)]
    unknown = [key for key in keys if key not in PAPER_TABLES]
    if unknown:
        raise ReportError(f"unknown table(s) {', '.join(unknown)} (tables: {', '.join(PAPER_TABLES)})")
    report = {}
    for key in keys:
        table: PaperTable = PAPER_TABLES[key]
        lines = []
        for row, paper in table.rows.items():
            matching = [run for run in runs if run.table == key and run.row == row]
            lines += [ReportRow(row, paper, run) for run in matching] or [ReportRow(row, paper, None)]
        report[key] = lines
    return report


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = round(value, 1) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _cells(line: ReportRow) -> list[str]:
    """Markdown/CSV cells: row, label, work dir, our 6 APs, paper AP, difference, FPS, paper FPS, status."""
    run = line.run
    ours = [_fmt(run.ap[c]) if run and run.ap else line.status if c == "AP" else "-" for c in METRIC_COLUMNS.values()]
    return [line.row, line.paper.label, str(run.work_dir) if run else "-", *ours, _fmt(line.paper.ap),
            _fmt(line.difference, signed=True), _fmt(run.fps if run else None), _fmt(line.paper.fps), line.status]


HEADER = ["row", "paper label", "work dir", *METRIC_COLUMNS.values(), "paper AP", "diff", "FPS", "paper FPS",
          "status"]


def format_markdown(report: dict[str, list[ReportRow]]) -> str:
    """All report tables as markdown, one section per paper table."""
    parts = []
    for key, lines in report.items():
        parts += [f"## {PAPER_TABLES[key].title}", "", "| " + " | ".join(HEADER) + " |",
                  "|" + "---|" * len(HEADER)]
        parts += ["| " + " | ".join(_cells(line)) + " |" for line in lines]
        parts.append("")
    return "\n".join(parts)


def write_csv(lines: Sequence[ReportRow], path: str | Path) -> None:
    """One table's rows as CSV (same columns as the markdown; numbers in AP points, '-' when absent or COCO has no
    data)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(_cells(line) for line in lines)


def write_report(work_dirs: Sequence[str | Path], out_dir: str | Path | None = None,
                 tables: Sequence[str] | None = None) -> str:
    """Read the work dirs, return the markdown report; with ``out_dir`` also write ``report.md`` and one
    ``table_<key>.csv`` and ``table_<key>.md`` per table."""
    report = collect_rows([run for d in work_dirs for run in read_run(d)], tables)
    markdown = format_markdown(report)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.md").write_text(markdown)
        for key, lines in report.items():
            write_csv(lines, out_dir / f"table_{key}.csv")
            (out_dir / f"table_{key}.md").write_text(format_markdown({key: lines}))
    return markdown


def configs_for_tables(config_paths: Iterable[str | Path], tables: Sequence[str] | None = None) -> list[Path]:
    """The configs (loaded with their ``_base_`` chain) whose ``ablation`` key names a row of one of ``tables``;
    every config with an ``ablation`` key when ``tables`` is empty. Used by scripts/reproduce_ablations.sh."""
    from gfldet.config import load_config

    unknown = [key for key in tables or () if key not in PAPER_TABLES]
    if unknown:
        raise ReportError(f"unknown table(s) {', '.join(unknown)} (tables: {', '.join(PAPER_TABLES)})")
    selected = []
    for path in config_paths:
        cfg = load_config(path)
        if "ablation" not in cfg:
            continue
        pairs = ablation_rows(cfg.to_dict()["ablation"], str(path))
        if not tables or any(table in tables for table, _ in pairs):
            selected.append(Path(path))
    return selected
