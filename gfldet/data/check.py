"""``gfldet data check``: validate every annotation and every image of a split and summarise what was found.

Unlike dataset building, checking never stops at the first problem and ignores the policies: it lists all
problems (with the policy that training would apply), decodes every image with the loader's decoder and
compares its size with the annotation file.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gfldet.data.annotations import CocoAnnotations, ImageRecord, parse_annotations
from gfldet.data.coco import read_rgb
from gfldet.data.problems import DataError, ProblemLog

__all__ = ["CheckReport", "check_split"]


@dataclass
class CheckReport:
    """What ``check_split`` found in one split."""

    split: str
    annotations: CocoAnnotations
    image_problems: ProblemLog
    image_notes: ProblemLog
    modes: Counter = field(default_factory=Counter)

    @property
    def num_problems(self) -> int:
        return self.annotations.problems.total() + self.image_problems.total()

    def lines(self) -> list[str]:
        ann = self.annotations
        records = ann.records
        per_class = np.bincount(np.concatenate([r.labels for r in records] + [np.zeros(0, np.int64)]),
                                minlength=len(ann.class_names))
        lines = [f"[{self.split}] {ann.ann_file}",
                 f"  images: {len(records)}  boxes: {int(per_class.sum())}  "
                 f"crowd/ignore boxes: {sum(len(r.ignore_boxes) for r in records)}  "
                 f"images without boxes: {sum(r.is_empty for r in records)}"
                 + ("" if ann.has_annotations else "  (image info only: no 'annotations' key)"),
                 "  boxes per class: " + ", ".join(f"{n}={c}" for n, c in zip(ann.class_names, per_class)),
                 "  image modes: " + ", ".join(f"{m}={c}" for m, c in sorted(self.modes.items())),
                 f"  problems found: {self.num_problems}"]
        for log in (ann.problems, self.image_problems):
            lines += ["    " + line for line in log.lines()]
        notes = ann.notes.lines() + self.image_notes.lines()
        if notes:
            lines += ["  notes (handled, no data lost):"] + ["    " + line for line in notes]
        return lines


def check_split(split: str, ann_file: str, img_dir: str, *, num_threads: int = 2) -> CheckReport:
    """Parse ``ann_file`` and decode every image under ``img_dir``; nothing raises for bad data except an
    unreadable or non-COCO annotation file (DataError)."""
    annotations = parse_annotations(ann_file)
    report = CheckReport(split, annotations, ProblemLog(ann_file), ProblemLog(ann_file))
    _check_not_empty(annotations, report.image_problems)
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        for record, outcome in zip(annotations.records,
                                   pool.map(lambda r: _check_image(Path(img_dir), r), annotations.records)):
            kind, message, mode = outcome
            if mode:
                report.modes[mode] += 1
            if kind in _NOTES:
                report.image_notes.add(kind, f"{ann_file}: image id {record.image_id}: {message}")
            elif kind:
                report.image_problems.add(kind, f"{ann_file}: image id {record.image_id}: {message}")
    return report


def _check_not_empty(annotations: CocoAnnotations, problems: ProblemLog) -> None:
    """A split without images, or with annotations but not one valid box, is a problem: training refuses it."""
    records = annotations.records
    if not records:
        problems.add("empty split", f"{annotations.ann_file}: 'images' is empty; a split needs at least one image")
    elif annotations.has_annotations and all(r.is_empty for r in records):
        problems.add("no valid box", f"{annotations.ann_file}: none of the {len(records)} image(s) has a valid box; "
                                     f"training leaves every image out (filter_empty)")


_NOTES = ("grayscale image (expanded to RGB)", "image with alpha channel (alpha dropped)")
_MODE_NOTES = {"L": _NOTES[0], "LA": _NOTES[1], "RGBA": _NOTES[1], "I;16": _NOTES[0], "1": _NOTES[0]}


def _check_image(img_dir: Path, record: ImageRecord) -> tuple[str | None, str, str | None]:
    """(problem or note kind or None, message, PIL mode or None) for one image."""
    path = img_dir / record.file_name
    if not path.is_file():
        return "missing image file", f"file not found: {path}", None
    try:
        with Image.open(path) as image:
            mode = image.mode
    except (OSError, ValueError):
        mode = None
    try:
        decoded = read_rgb(path)
    except DataError as err:
        return "unreadable image", str(err), mode
    if decoded.shape[:2] != (record.height, record.width):
        return ("image size mismatch", f"{path} decodes to {decoded.shape[1]}x{decoded.shape[0]} (w x h) but the "
                f"annotation file says {record.width}x{record.height}", mode)
    return _MODE_NOTES.get(mode), f"{path} has mode {mode}", mode
