"""``gfldet data browse``: write images with their GT boxes as the model sees them (after the split's transforms)."""

from __future__ import annotations

from pathlib import Path
import cv2
import numpy as np

from gfldet.data.coco import CocoDetection
from gfldet.visualization import draw_detections

__all__ = ["browse"]

BROWSE_SEED = 0


def browse(dataset: CocoDetection, out_dir: str | Path, *, num: int, ext: str = ".jpg") -> list[Path]:
    """Draw the first ``num`` samples (random steps seeded per index); crowd boxes grey. Returns written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(min(num, len(dataset))):
        sample = dataset[(index, BROWSE_SEED + index)]
        boxes = np.concatenate([sample.boxes.numpy(), sample.ignore_boxes.numpy()])
        labels = np.r_[sample.labels.numpy(), np.full(len(sample.ignore_boxes), -1)]
        canvas = draw_detections(sample.image.permute(1, 2, 0).numpy(), boxes, labels,
                                 class_names=dataset.class_names)
        path = out_dir / f"{index:04d}_id{sample.image_id}_{Path(sample.file_name).stem}{ext}"
        if not cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {path}")
        written.append(path)
    return written
