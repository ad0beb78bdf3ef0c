"""COCO-format detection dataset on pycocotools, with the bad-input policies of ``gfldet.data.problems``.

Labels are contiguous 0..C-1 inside (categories sorted by id), original category ids outside (``ds.cat_ids``).
Crowd boxes are ignore boxes, never targets. ``filter_empty`` leaves out images without any valid or crowd box
(training only; evaluation splits keep every image; a crowd-only image stays: its crowd regions are negatives to
ignore); ``min_size`` leaves out training images whose shorter side (the file's ``width`` / ``height``) is under
that many pixels, as both reference implementations do with 32 (mmdetection's ``filter_cfg.min_size``). Files
without ``annotations`` (test-dev image info) load as images without boxes. ``ds.coco`` is the pycocotools index of
the file *as written* (what COCO evaluation must use), less what COCO evaluation cannot read
(:func:`evaluable_annotations`).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from gfldet.data.annotations import ImageRecord, load_coco_json, parse_annotations
from gfldet.data.problems import ANNOTATION_POLICIES, IMAGE_POLICIES, DataError, check_policy
from gfldet.data.transforms import DetectionTransform

__all__ = ["CocoDetection", "Sample", "coco_index", "evaluable_annotations", "read_rgb"]

logger = logging.getLogger("gfldet.data")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what read_rgb (OpenCV) decodes


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3] with OpenCV (grayscale expanded, alpha dropped, EXIF applied).

    Raises DataError naming the file if it is missing or cannot be decoded.
    """
    buffer = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if buffer is None:
        raise DataError(f"image file not found: {path}")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise DataError(f"cannot decode image {path} ({buffer.size} bytes): corrupt or not an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class Sample:
    """One transformed image: ``image`` [3, h, w] uint8 RGB, float32 after SSD's photometric distortion (normalised
    by collate); boxes xyxy px in the resized image (h, w)."""

    image: torch.Tensor
    boxes: torch.Tensor          # [G, 4] float32
    labels: torch.Tensor         # [G] int64 in 0..C-1
    ignore_boxes: torch.Tensor   # [I, 4] float32 (crowd)
    image_id: int
    file_name: str
    image_size: tuple[int, int]      # (h, w) after resize
    original_size: tuple[int, int]   # (h, w) of the file
    scale_factor: tuple[float, float]  # (sx, sy) = (w_resized / w, h_resized / h)
    skipped_images: tuple[str, ...] = ()   # why each unreadable image tried before this one was skipped


class CocoDetection(Dataset):
    """A COCO detection split. ``ds[i]`` or ``ds[(i, seed)]`` -> Sample (``seed`` fixes random augmentation)."""

    def __init__(self, *, ann_file: str, img_dir: str, transform: DetectionTransform, filter_empty: bool,
                 on_bad_image: str, on_bad_annotation: str, min_size: int = 0):
        self.ann_file, self.img_dir, self.transform = str(ann_file), Path(img_dir), transform
        self._coco: COCO | None = None
        self.on_bad_image = check_policy("on_bad_image", on_bad_image, IMAGE_POLICIES)
        check_policy("on_bad_annotation", on_bad_annotation, ANNOTATION_POLICIES)
        parsed = parse_annotations(ann_file)
        if parsed.problems and on_bad_annotation == "error":
            raise DataError(f"{ann_file}: {parsed.problems.total()} bad annotation(s) with on_bad_annotation=error "
                            f"(set data.on_bad_annotation: drop to drop and count them):\n  "
                            + "\n  ".join(parsed.problems.lines()))
        self.cat_ids, self.class_names = parsed.cat_ids, parsed.class_names
        self.has_annotations = parsed.has_annotations
        self.problems, self.notes = parsed.problems, parsed.notes
        self.records = self._existing_images(parsed.records)
        self.num_filtered_empty = self._leave_out(lambda r: filter_empty and r.is_empty)
        self.min_size = min_size
        self.num_filtered_small = self._leave_out(lambda r: min(r.height, r.width) < min_size)
        if not self.records:
            raise DataError(f"{ann_file}: none of its {len(parsed.records)} image(s) is usable ({self._losses()}); "
                            f"check the split's ann_file and img_dir in the config's data section"
                            + "".join(f"\n  {line}" for line in self.problems.lines()))
        self.problems.log()
        if self.num_filtered_empty:
            logger.info("%s: %d image(s) without boxes left out of training (filter_empty)", ann_file,
                        self.num_filtered_empty)
        if self.num_filtered_small:
            logger.info("%s: %d image(s) with a side under %d px left out of training (min_size)", ann_file,
                        self.num_filtered_small, min_size)
        self.image_ids = [r.image_id for r in self.records]

    def _leave_out(self, condition) -> int:
        """Drop the records meeting ``condition``; returns how many."""
        kept = [r for r in self.records if not condition(r)]
        dropped, self.records = len(self.records) - len(kept), kept
        return dropped

    def _losses(self) -> str:
        """Where the images of the file went: left out as empty, and problems (their lines follow the message)."""
        parts = []
        if self.num_filtered_empty:
            parts.append(f"{self.num_filtered_empty} left out for having no boxes (filter_empty)")
        if self.num_filtered_small:
            parts.append(f"{self.num_filtered_small} left out for a side under {self.min_size} px (min_size)")
        if self.problems:
            parts.append(f"{self.problems.total()} problem(s), below")
        return ", ".join(parts) or "the file lists no images"

    @property
    def coco(self) -> COCO:
        """pycocotools index of the annotation file as written (for COCO evaluation), built on first use.

        Built lazily and not kept from parsing: the training set's 860k-annotation dict would otherwise be
        copied (page by page, by reference counting and GC) into every forked DataLoader worker.
        """
        if self._coco is None:
            self._coco = coco_index(self.ann_file)
        return self._coco

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def _existing_images(self, records: list[ImageRecord]) -> list[ImageRecord]:
        """Records whose file exists; missing ones raise (on_bad_image=error) or are counted and skipped."""
        kept = []
        for record in records:
            path = self.img_dir / record.file_name
            if path.is_file():
                kept.append(record)
                continue
            message = f"{self.ann_file}: image id {record.image_id}: file not found: {path}"
            if self.on_bad_image == "error":
                raise DataError(message + " (set data.on_bad_image: skip to skip and count such images)")
            self.problems.add("missing image file", message)
        return kept

    def aspect_flags(self) -> np.ndarray:
        """[N] bool: True where the image is portrait (width < height), from the annotation file sizes."""
        return np.array([r.width < r.height for r in self.records], bool)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]) -> Sample:
        index, seed = item if isinstance(item, tuple) else (item, None)
        skipped = []
        for attempt in range(len(self.records)):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                image = self.load_image(record)
            except DataError as err:
                if self.on_bad_image == "error":
                    raise DataError(f"{err} (set data.on_bad_image: skip to skip such images)") from None
                logger.warning("skipping bad image (data.on_bad_image=skip): %s", err)
                skipped.append(str(err))
                continue
            return self._transform(record, image, seed, tuple(skipped))
        raise DataError(f"{self.ann_file}: every image failed to load (data.on_bad_image=skip), e.g. {skipped[0]}")

    def load_image(self, record: ImageRecord) -> np.ndarray:
        """RGB uint8 [H, W, 3]; DataError if unreadable or not of the size the annotation file claims."""
        path = self.img_dir / record.file_name
        try:
            image = read_rgb(path)
        except DataError as err:
            raise DataError(f"{self.ann_file}: image id {record.image_id}: {err}") from None
        if image.shape[:2] != (record.height, record.width):
            raise DataError(f"{self.ann_file}: image id {record.image_id}: {path} is {image.shape[1]}x"
                            f"{image.shape[0]} (w x h) but the annotation file says {record.width}x{record.height}")
        return image

    def _transform(self, record: ImageRecord, image: np.ndarray, seed: int | None,
                   skipped: tuple[str, ...]) -> Sample:
        out = self.transform(image, record.boxes, record.labels, record.ignore_boxes, seed=seed)
        return Sample(image=out.image, boxes=torch.from_numpy(out.boxes), labels=torch.from_numpy(out.labels),
                      ignore_boxes=torch.from_numpy(out.ignore_boxes), image_id=record.image_id,
                      file_name=record.file_name, image_size=tuple(out.image.shape[1:]),
                      original_size=image.shape[:2], scale_factor=out.scale_factor, skipped_images=skipped)


def evaluable_annotations(annotations: list, *, source: str) -> list[dict]:
    """The annotations COCO evaluation can score, as it reads them: ``bbox`` as 4 finite numbers (numbers written
    as strings are read as numbers) and ``area`` (w * h where the file has none, as for box-only datasets).

    Annotations whose bbox is not 4 finite numbers are left out: loading the split already reported them as
    problems (``data.on_bad_annotation``), and pycocotools and faster-coco-eval would fail on them after inference.
    """
    kept, no_area = [], 0
    for ann in annotations:
        box = _finite_box(ann.get("bbox") if isinstance(ann, dict) else None)
        if box is None:
            continue
        ann = {**ann, "bbox": box}
        if not isinstance(ann.get("area"), (int, float)):
            ann["area"], no_area = box[2] * box[3], no_area + 1
        kept.append(ann)
    if len(kept) < len(annotations):
        logger.warning("%s: %d annotation(s) without a readable bbox left out of COCO evaluation", source,
                       len(annotations) - len(kept))
    if no_area:
        logger.info("%s: %d annotation(s) without 'area': w * h used for COCO's small/medium/large", source, no_area)
    return kept


def _finite_box(bbox) -> list[float] | None:
    """[x, y, w, h] as floats, or None unless ``bbox`` is 4 finite numbers (or numeric strings)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        box = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return None
    return box if all(np.isfinite(box)) else None


def coco_index(ann_file: str | Path, *, hint: str = " (check data.<split>.ann_file)") -> COCO:
    """pycocotools index of a COCO file as written, less the annotations COCO evaluation cannot read
    (:func:`evaluable_annotations`): the ground truth of COCO evaluation. ``hint`` follows a missing file's
    message."""
    data = load_coco_json(ann_file, hint=hint)
    if "annotations" in data:
        data["annotations"] = evaluable_annotations(data["annotations"], source=str(ann_file))
    return _pycocotools_index(data)


def _pycocotools_index(data: dict) -> COCO:
    """A pycocotools COCO over already-loaded json (its ``createIndex`` prints; we keep stdout clean)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
