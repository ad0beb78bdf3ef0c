"""A deterministic synthetic COCO dataset of coloured shapes on textured backgrounds.

Used by the quickstart and the tests: small images (default 256x320, a quarter of them portrait) with 0-6 shapes
of four classes (circle, square, triangle, cross) of varied size and colour, partly overlapping, on a smooth
colour gradient plus noise and stripes. A tiny detector learns it on the CPU in minutes.

The same ``seed`` gives byte-identical files on the same library versions: every random draw comes from one
``numpy.random.Generator`` per image (seeded from ``(seed, split, index)``), drawing is OpenCV rasterisation and
the JSON is written with a fixed key order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ("circle", "square", "triangle", "cross")
MAX_SHAPES = 6
PORTRAIT_SHARE = 0.25   # share of images whose height and width are swapped (exercises aspect grouping)
EMPTY_SHARE = 0.04      # share of images without any shape (exercises filter_empty)
MAX_BOX_IOU = 0.35      # a new shape overlapping an earlier one more than this is redrawn elsewhere
MIN_VISIBLE = 0.6       # a shape less visible than this (occluded by later ones) is left out
JPEG_QUALITY = 92


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: image counts per split, the landscape size (height, width) and the seed."""

    num_train: int
    num_val: int
    height: int
    width: int
    seed: int


def generate_synthetic(spec: SynthSpec, out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/{train,val}.json`` and ``out_dir/images/{split}_{index:05d}.jpg``; return the json paths."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    written = {}
    for split_index, (split, count) in enumerate((("train", spec.num_train), ("val", spec.num_val))):
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng([spec.seed, split_index, index])
            image, boxes, labels = _render_image(rng, spec.height, spec.width)
            file_name = f"images/{split}_{index:05d}.jpg"
            ok, encoded = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            assert ok, "OpenCV failed to encode a JPEG"
            (out_dir / file_name).write_bytes(encoded.tobytes())
            image_id = index + 1
            images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
            for (x1, y1, x2, y2), label in zip(boxes, labels):
                w, h = x2 - x1, y2 - y1
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                    "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
        categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]
        path = out_dir / f"{split}.json"
        path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        written[split] = path
    return written


def _render_image(rng: np.random.Generator, height: int, width: int):
    """One RGB uint8 image [H, W, 3] and its shapes' boxes (xyxy px, integer-valued floats) and labels 0..3."""
    if rng.random() < PORTRAIT_SHARE:
        height, width = width, height
    image = _background(rng, height, width)
    num_shapes = 0 if rng.random() < EMPTY_SHARE else int(rng.integers(1, MAX_SHAPES + 1))
    placed_boxes, shapes = [], []
    for _ in range(num_shapes):
        placed = _place_shape(rng, height, width, placed_boxes)
        if placed is not None:
            label, (x1, y1, side) = placed
            placed_boxes.append((x1, y1, x1 + side, y1 + side))
            mask = np.zeros((height, width), np.uint8)
            _DRAW[label](mask, (x1, y1, side))
            shapes.append((label, mask > 0))
    # later shapes occlude earlier ones: keep only shapes that stay mostly visible
    top = np.full((height, width), -1, np.int64)
    for index, (_, mask) in enumerate(shapes):
        top[mask] = index
    boxes, labels = [], []
    for index, (label, mask) in enumerate(shapes):
        if (top[mask] == index).mean() < MIN_VISIBLE:
            continue
        ys, xs = np.nonzero(mask)
        image[mask] = _contrasting_colour(rng, image[mask].mean(axis=0))
        boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
        labels.append(label)
    return image, boxes, labels


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random colour field + sinusoidal stripes + pixel noise, uint8 [H, W, 3]."""
    coarse = rng.uniform(40, 215, size=(4, 5, 3)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 30)
    stripes = 12 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period))
    noise = rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    return np.clip(field + stripes[..., None] + noise, 0, 255).astype(np.uint8)


def _place_shape(rng, height, width, boxes, attempts: int = 10):
    """A class and an integer square cell (x1, y1, side) overlapping earlier cells at most MAX_BOX_IOU, or None."""
    label = int(rng.integers(len(CLASS_NAMES)))
    for _ in range(attempts):
        side = int(rng.integers(14, min(height, width) // 2))
        x1, y1 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        candidate = (x1, y1, x1 + side, y1 + side)
        if all(_iou(candidate, other) <= MAX_BOX_IOU for other in boxes):
            return label, (x1, y1, side)
    return None


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _contrasting_colour(rng: np.random.Generator, background_rgb: np.ndarray) -> np.ndarray:
    """A random colour at least ~100 (L1 over RGB) away from the mean background under the shape."""
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background_rgb).sum() > 100:
            break
    return colour.astype(np.uint8)


def _draw_circle(mask, box):
    x1, y1, side = box
    r = side // 2
    cv2.circle(mask, (x1 + r, y1 + r), r, 255, thickness=-1, lineType=cv2.LINE_8)


def _draw_square(mask, box):
    x1, y1, side = box
    inset = side // 8   # a margin so that squares are not simply the filled cell
    cv2.rectangle(mask, (x1 + inset, y1 + inset), (x1 + side - 1 - inset, y1 + side - 1 - inset), 255, thickness=-1)


def _draw_triangle(mask, box):
    x1, y1, side = box
    pts = np.array([[x1 + side // 2, y1], [x1, y1 + side - 1], [x1 + side - 1, y1 + side - 1]], np.int32)
    cv2.fillPoly(mask, [pts], 255)


def _draw_cross(mask, box):
    x1, y1, side = box
    bar = max(3, side // 4)
    lo = side // 2 - bar // 2
    cv2.rectangle(mask, (x1, y1 + lo), (x1 + side - 1, y1 + lo + bar - 1), 255, thickness=-1)
    cv2.rectangle(mask, (x1 + lo, y1), (x1 + lo + bar - 1, y1 + side - 1), 255, thickness=-1)


_DRAW = (_draw_circle, _draw_square, _draw_triangle, _draw_cross)
