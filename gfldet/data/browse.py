"""``gfldet data browse``: write images with their GT boxes as the model sees them (after the split's transforms)."""

from __future__ import annotations

from pathlib import Path
import cv2
import numpy as np
import torch

from gfldet.data.coco import CocoDetection, Sample
from gfldet.data.problems import ProblemLog
from gfldet.visualization import draw_detections

__all__ = ["browse"]

BROWSE_SEED = 0


def browse(dataset: CocoDetection, out_dir: str | Path, *, num: int,
           ext: str = ".jpg") -> tuple[list[Path], ProblemLog]:
    """Draw the first ``num`` readable samples (random steps seeded per index); crowd boxes grey.

    Returns the written paths and the unreadable images skipped (``data.on_bad_image: skip``), each drawn once.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = [], ProblemLog(dataset.ann_file)
    for index in range(len(dataset)):
        if len(written) == num:
            break
        sample = dataset[(index, BROWSE_SEED + index)]
        if sample.skipped_images:   # a replacement: the next index draws it
            skipped.add("unreadable image", sample.skipped_images[0])
            continue
        written.append(_draw(dataset, sample, out_dir / f"{index:04d}_id{sample.image_id}_"
                                                        f"{Path(sample.file_name).stem}{ext}"))
    return written, skipped


def _draw(dataset: CocoDetection, sample: Sample, path: Path) -> Path:
    """Write ``sample``'s image with its GT boxes (crowd ones grey) to ``path``."""
    boxes = np.concatenate([sample.boxes.numpy(), sample.ignore_boxes.numpy()])
    labels = np.r_[sample.labels.numpy(), np.full(len(sample.ignore_boxes), -1)]
    image = sample.image.clamp(0, 255).round().to(torch.uint8)  # float32 after SSD's photometric distortion
    canvas = draw_detections(image.permute(1, 2, 0).numpy(), boxes, labels, class_names=dataset.class_names)
    if not cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    return path
