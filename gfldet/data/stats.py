"""``gfldet data stats``: box size / aspect histograms and how much ``reg_max`` would clip ATSS targets.

Boxes are measured in the training resolution: each image is resized by the training transform's keep-ratio
rule (for ``RandomResize`` a scale is drawn per image with a fixed seed) or to its fixed size (SSD). Positives are computed with the real
batched ATSS assigner (``gfldet.assigners.ATSSAssigner``, the config's ``topk``) on the real priors
(``gfldet.models.priors.PriorGenerator``), one image at a time, without batch padding. For each positive prior
the four target distances from its centre to the GT sides are measured in stride units of its level; a
distance above ``reg_max`` cannot be represented by the distribution over bins {0..reg_max} and gets clipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import albumentations as A
import numpy as np
import torch

from gfldet.assigners import ATSSAssigner, pad_gt_boxes
from gfldet.data.coco import CocoDetection
from gfldet.data.transforms import KeepRatioResize, rescale_size
from gfldet.models.priors import PriorGenerator

__all__ = ["BoxStats", "collect_box_stats", "text_histogram", "save_histograms"]

SIZE_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, 100000)     # sqrt(area) px, COCO small/medium/large at 32/96
ASPECT_EDGES = (0, 1 / 8, 1 / 4, 1 / 2, 1 / 1.25, 1.25, 2, 4, 8, 1000)   # w / h
REG_MAX_CANDIDATES = (4, 8, 12, 16, 20, 24, 32)
STATS_SEED = 0


@dataclass
class BoxStats:
    """Box widths/heights in training px [B] and per positive prior the 4 target distances in stride units [P, 4]."""

    widths: np.ndarray
    heights: np.ndarray
    distances: np.ndarray
    num_gts_without_positive: int

    def clip_share(self, reg_max: float) -> tuple[float, float]:
        """(share of positive-prior sides, share of positive priors with any side) beyond ``reg_max``."""
        if len(self.distances) == 0:
            return 0.0, 0.0
        beyond = self.distances > reg_max
        return float(beyond.mean()), float(beyond.any(axis=1).mean())


def _training_scale(dataset: CocoDetection):
    """record -> (sx, sy) of the training transform's resize: keep-ratio (a fixed-seed draw for RandomResize) or to a
    fixed size (SSD's; its random zoom and crop before it are not simulated)."""
    fixed = next((s for s in dataset.transform.steps if isinstance(s, A.Resize)), None)
    if fixed is not None:
        return lambda record: (fixed.width / record.width, fixed.height / record.height)
    resize = next((s for s in dataset.transform.steps if isinstance(s, KeepRatioResize)), None)
    if resize is None:
        return lambda record: (1.0, 1.0)
    resize.set_random_seed(STATS_SEED)

    def scale(record):
        new_w, new_h = rescale_size(record.width, record.height, resize.target_scale())
        return new_w / record.width, new_h / record.height
    return scale


def collect_box_stats(dataset: CocoDetection, *, strides: Sequence[int], octave_base_scale: float,
                      topk: int, max_images: int | None = None) -> BoxStats:
    """Resize every record's boxes to the training scale and assign them with ATSS (see module docstring)."""
    scale_of = _training_scale(dataset)
    priors_of = PriorGenerator(strides=strides, octave_base_scale=octave_base_scale)
    assigner = ATSSAssigner(topk=topk)
    widths, heights, distances, unmatched = [], [], [], 0
    for record in dataset.records[:max_images]:
        if len(record.boxes) == 0:
            continue
        sx, sy = scale_of(record)
        boxes = torch.from_numpy(record.boxes * np.array([sx, sy, sx, sy], np.float32))
        widths.append(boxes[:, 2] - boxes[:, 0])
        heights.append(boxes[:, 3] - boxes[:, 1])
        h, w = round(record.height * sy), round(record.width * sx)
        priors = priors_of([(math.ceil(h / s), math.ceil(w / s)) for s in strides], device=torch.device("cpu"))
        gt, _, valid = pad_gt_boxes([boxes], [torch.zeros(len(boxes), dtype=torch.int64)])
        result = assigner.assign(priors.anchors_px, priors.num_per_level, gt, valid)
        index = result.gt_index[0]
        positive = index >= 0
        unmatched += len(boxes) - len(torch.unique(index[positive]))
        centre, stride = priors.centers_px[positive], priors.strides[positive][:, None]
        target = boxes[index[positive]]
        ltrb = torch.cat([centre - target[:, :2], target[:, 2:] - centre], dim=1) / stride
        distances.append(ltrb)
    return BoxStats(_cat(widths, (0,)), _cat(heights, (0,)), _cat(distances, (0, 4)), unmatched)


def _cat(tensors: list[torch.Tensor], empty_shape: tuple[int, ...]) -> np.ndarray:
    return torch.cat(tensors).numpy() if tensors else np.zeros(empty_shape, np.float32)


def text_histogram(values: np.ndarray, edges: Sequence[float], title: str, *, width: int = 40) -> list[str]:
    """A text histogram: one line per bin ``[lo, hi)`` with count, share and a bar."""
    counts, _ = np.histogram(values, bins=np.asarray(edges, np.float64))
    total = max(int(counts.sum()), 1)
    lines = [title]
    for lo, hi, count in zip(edges[:-1], edges[1:], counts):
        bar = "#" * int(round(width * count / total))
        lines.append(f"  [{lo:>8.3g}, {hi:>8.3g}) {count:>8d} {100 * count / total:5.1f}% {bar}")
    return lines


def save_histograms(stats: BoxStats, path: str, *, reg_max: int) -> None:
    """Write a PNG with the size, aspect and target-distance histograms (matplotlib, headless Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].hist(np.sqrt(stats.widths * stats.heights), bins=50)
    axes[0].set(title="box size sqrt(w*h) (training px)", xlabel="px", ylabel="boxes")
    axes[1].hist(np.log2(stats.widths / stats.heights), bins=50)
    axes[1].set(title="aspect log2(w/h)", xlabel="log2(w/h)")
    axes[2].hist(stats.distances.reshape(-1), bins=60)
    axes[2].axvline(reg_max, color="red", label=f"reg_max = {reg_max}")
    axes[2].set(title="ATSS target distances (stride units)", xlabel="distance", ylabel="prior sides")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
