"""Drawing boxes, class names and scores on images (headless, OpenCV), for ``gfldet data browse`` and ``infer``."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = ["draw_detections", "colour_of"]

_GOLDEN = 0.618033988749895


def colour_of(label: int) -> tuple[int, int, int]:
    """A distinct, saturated RGB colour per class label (golden-ratio hue steps, stable across runs)."""
    hue = int(((label * _GOLDEN) % 1.0) * 179)
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(image: np.ndarray, boxes, labels, scores=None, class_names: Sequence[str] | None = None,
                    *, thickness: int = 2) -> np.ndarray:
    """Return a copy of ``image`` with boxes and captions drawn.

    image: [H, W, 3] uint8 RGB. boxes: [K, 4] xyxy pixels (array or tensor). labels: [K] ints 0..C-1 (a negative
    label draws a grey box without caption, e.g. crowd/ignore regions). scores: optional [K] in [0, 1].
    class_names: optional names indexed by label (else the label number is written).
    """
    canvas = np.ascontiguousarray(image).copy()
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1).astype(int)
    scores = None if scores is None else np.asarray(scores, np.float32).reshape(-1)
    font_scale = max(0.35, min(canvas.shape[:2]) / 900)
    for k, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = (160, 160, 160) if label < 0 else colour_of(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, lineType=cv2.LINE_AA)
        if label < 0:
            continue
        caption = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        if scores is not None:
            caption += f" {scores[k]:.2f}"
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(canvas, caption, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas
