"""Training / test transforms on albumentations, faithful to the mmdetection reference pipeline.

Config (one list per split, then normalisation from ``data.mean`` / ``data.std``)::

    data.train.transforms: [{type: Resize, scale: [1333, 800]}, {type: HorizontalFlip, p: 0.5}]
    data.train.transforms: [{type: RandomResize, scales: [[1333, 480], [1333, 800]]}, {type: HorizontalFlip, p: 0.5}]
    data.train.transforms: [                                  # SSD512 (mmdetection configs/ssd/ssd512_coco.py)
        {type: Expand, ratio_range: [1, 4], fill: [123.675, 116.28, 103.53], p: 0.5},
        {type: MinIoURandomCrop, min_ious: [0.1, 0.3, 0.5, 0.7, 0.9], min_crop_size: 0.3, bbox_clip_border: true},
        {type: Resize, scale: [512, 512], keep_ratio: false}, {type: HorizontalFlip, p: 0.5},
        {type: PhotoMetricDistortion, brightness_delta: 32, contrast_range: [0.5, 1.5],
         saturation_range: [0.5, 1.5], hue_delta: 18}]

Keep-ratio resize (mmcv ``rescale_size`` + ``imrescale``): for an image of ``w x h`` and ``scale = (long, short)``,
``factor = min(long / max(h, w), short / min(h, w))`` and the new size is ``(int(w * factor + 0.5),
int(h * factor + 0.5))``, resized with OpenCV bilinear. Boxes are then scaled by the *actual* factors
``(new_w / w, new_h / h)`` (mmdetection's ``scale_factor``), which is what albumentations does with its normalised
box coordinates. albumentations' own ``LongestMaxSize`` / ``SmallestMaxSize`` cannot express the min-of-two rule
and round with Python's ``round`` (ties to even), hence ``KeepRatioResize`` / ``RandomKeepRatioResize`` below.

``RandomResize`` follows mmdetection's ``RandomResize(scale=[(1333, 480), (1333, 800)], keep_ratio=True)``:
long edge and short edge are drawn as uniform integers in their [min, max] ranges (inclusive), then the
keep-ratio rule above is applied with that (long, short) scale.

``Resize`` with ``keep_ratio: false`` resizes to exactly ``scale = [width, height]`` (mmdetection's
``Resize(scale=(w, h), keep_ratio=False)``): albumentations' ``A.Resize`` is that rule (OpenCV bilinear; boxes follow
the actual factors through the normalised coordinates).

The SSD steps (``Expand``, ``MinIoURandomCrop``, ``PhotoMetricDistortion``) live in ``ssd_augment.py``.
``DetectionTransform(..., seed=...)`` reproduces every random step: it seeds each step with its own stream
(albumentations would give every step the same one).

Horizontal flip maps ``x1' = W - x2``, ``x2' = W - x1`` (mmdetection's rule). Boxes are xyxy pixels throughout;
boxes that end up empty are dropped. The transform returns uint8 CHW images (float32 after ``PhotoMetricDistortion``,
unclipped as mmdetection's): normalisation ``(RGB - mean) / std``
happens in ``gfldet.data.batching.collate``, fused with the padding copy (albumentations' ``Normalize`` on HWC
followed by a CHW copy cost three times as much per image in ``benchmarks/bench_loader.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from gfldet.config import ConfigError, build_from_cfg
from gfldet.data.ssd_augment import Expand, MinIoURandomCrop, PhotoMetricDistortion

__all__ = ["KeepRatioResize", "RandomKeepRatioResize", "Expand", "MinIoURandomCrop", "PhotoMetricDistortion",
           "DetectionTransform", "TransformResult", "build_transform", "fixed_size_resize", "rescale_size"]


def rescale_size(width: int, height: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv's keep-ratio rule: the ``(new_w, new_h)`` of a ``width x height`` image fitted into ``scale``."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


class KeepRatioResize(A.DualTransform):
    """Resize keeping the aspect ratio into ``scale = (long, short)`` (mmcv ``imrescale``, bilinear)."""

    def __init__(self, *, scale: Sequence[int]):
        super().__init__(p=1.0)
        if len(scale) != 2 or min(scale) <= 0:
            raise ConfigError(f"Resize scale must be two positive ints (long, short); got {scale!r}")
        self.scale = tuple(int(s) for s in scale)

    def target_scale(self) -> tuple[int, int]:
        return self.scale

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        return {"new_size": rescale_size(width, height, self.target_scale())}

    def apply(self, img: np.ndarray, new_size: tuple[int, int], **params: Any) -> np.ndarray:
        if (img.shape[1], img.shape[0]) == new_size:
            return img
        return cv2.resize(img, new_size, interpolation=cv2.INTER_LINEAR)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes   # albumentations keeps boxes normalised by the image size: a resize leaves them unchanged

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale",)


class RandomKeepRatioResize(KeepRatioResize):
    """Keep-ratio resize into a scale drawn per image: long and short edges uniform integers in their ranges.

    ``scales = [[long_a, short_a], [long_b, short_b]]``; e.g. ``[[1333, 480], [1333, 800]]`` is ms-2x training.
    """

    def __init__(self, *, scales: Sequence[Sequence[int]]):
        if len(scales) != 2 or any(len(s) != 2 for s in scales):
            raise ConfigError(f"RandomResize scales must be two (long, short) pairs; got {scales!r}")
        longs, shorts = [max(s) for s in scales], [min(s) for s in scales]
        super().__init__(scale=(max(longs), max(shorts)))
        self.scales = [list(s) for s in scales]
        self.long_range = (min(longs), max(longs))
        self.short_range = (min(shorts), max(shorts))

    def target_scale(self) -> tuple[int, int]:
        return self.py_random.randint(*self.long_range), self.py_random.randint(*self.short_range)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scales",)


def fixed_size_resize(scale: Sequence[int]) -> A.Resize:
    """Resize to exactly ``scale = [width, height]`` px, ignoring the aspect ratio.

    mmdetection's ``Resize(scale=(w, h), keep_ratio=False)``: OpenCV bilinear, boxes scaled by ``(new_w / w,
    new_h / h)``. albumentations' ``A.Resize`` does exactly that (``cv2.resize(..., INTER_LINEAR)``; boxes are
    normalised coordinates, so they follow the actual factors).
    """
    if len(scale) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in scale):
        raise ConfigError(f"Resize scale with keep_ratio: false must be two positive ints [width, height]; "
                          f"got {scale!r}")
    width, height = scale
    return A.Resize(height=height, width=width, interpolation=cv2.INTER_LINEAR)


def _resize(*, scale: list[int], keep_ratio: bool = True) -> A.BasicTransform:
    """``scale`` is [long, short] px with ``keep_ratio`` (default), [width, height] px without."""
    return KeepRatioResize(scale=scale) if keep_ratio else fixed_size_resize(scale)


def _random_resize(*, scales: list[list[int]]) -> A.BasicTransform:
    return RandomKeepRatioResize(scales=scales)


def _horizontal_flip(*, p: float) -> A.BasicTransform:
    return A.HorizontalFlip(p=p)


def _expand(*, ratio_range: list[float], fill: list[float], p: float) -> A.BasicTransform:
    return Expand(ratio_range=ratio_range, fill=fill, p=p)


def _min_iou_random_crop(*, min_ious: list[float], min_crop_size: float,
                         bbox_clip_border: bool = True) -> A.BasicTransform:
    """``bbox_clip_border`` defaults to true, the only value albumentations can honour (see MinIoURandomCrop)."""
    return MinIoURandomCrop(min_ious=min_ious, min_crop_size=min_crop_size, bbox_clip_border=bbox_clip_border)


def _photo_metric_distortion(*, brightness_delta: float, contrast_range: list[float], saturation_range: list[float],
                             hue_delta: float) -> A.BasicTransform:
    return PhotoMetricDistortion(brightness_delta=brightness_delta, contrast_range=contrast_range,
                                 saturation_range=saturation_range, hue_delta=hue_delta)


TRANSFORMS = {"Resize": _resize, "RandomResize": _random_resize, "HorizontalFlip": _horizontal_flip,
              "Expand": _expand, "MinIoURandomCrop": _min_iou_random_crop,
              "PhotoMetricDistortion": _photo_metric_distortion}


@dataclass
class TransformResult:
    """``image`` [3, h, w] uint8 RGB, or float32 after ``PhotoMetricDistortion`` (not normalised); boxes xyxy px in
    the resized image; ``scale_factor`` (sx, sy).

    ``scale_factor`` is output size / input size: the box scaling of resize-and-flip pipelines (the test ones); after
    ``Expand`` or ``MinIoURandomCrop`` it is only the size ratio.
    """

    image: torch.Tensor
    boxes: np.ndarray
    labels: np.ndarray
    ignore_boxes: np.ndarray
    scale_factor: tuple[float, float]


class DetectionTransform:
    """Geometric and photometric steps on the image, carrying boxes, labels and ignore boxes along."""

    def __init__(self, *, steps: Sequence[A.BasicTransform]):
        self.steps = list(steps)
        self.compose = A.Compose(
            self.steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "is_ignore"]),
        )

    def seed_steps(self, seed: int) -> None:
        """Seed every step with its own stream derived from ``(seed, step index)``.

        albumentations' ``Compose.set_random_seed`` gives every step ``random.Random(seed)``: the same stream, so
        e.g. two steps with ``p: 0.5`` would always be applied together.
        """
        self.compose.set_random_seed(seed)
        for index, step in enumerate(self.steps):
            step.set_random_seed(int(np.random.SeedSequence([seed % 2**64, index]).generate_state(1)[0]))

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, ignore_boxes: np.ndarray,
                 *, seed: int | None = None) -> TransformResult:
        """``image`` [H, W, 3] uint8 RGB; ``boxes`` [G, 4] and ``ignore_boxes`` [I, 4] xyxy px inside the image.

        ``seed`` makes the random steps reproducible per sample (independent of worker processes).
        """
        if seed is not None:
            self.seed_steps(seed)
        all_boxes = np.concatenate([boxes, ignore_boxes]).astype(np.float32).reshape(-1, 4)
        is_ignore = np.r_[np.zeros(len(boxes), bool), np.ones(len(ignore_boxes), bool)]
        all_labels = np.r_[labels, np.full(len(ignore_boxes), -1)].astype(np.int64)
        out = self.compose(image=image, bboxes=all_boxes, labels=all_labels, is_ignore=is_ignore)
        new_h, new_w = out["image"].shape[:2]
        out_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        keep = (out_boxes[:, 2] > out_boxes[:, 0]) & (out_boxes[:, 3] > out_boxes[:, 1])
        ignore = np.asarray(out["is_ignore"], bool).reshape(-1)
        tensor = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return TransformResult(
            image=tensor, boxes=out_boxes[keep & ~ignore],
            labels=np.asarray(out["labels"], np.int64).reshape(-1)[keep & ~ignore],
            ignore_boxes=out_boxes[keep & ignore],
            scale_factor=(new_w / image.shape[1], new_h / image.shape[0]),
        )


def build_transform(steps_cfg: Sequence, *, where: str = "data.transforms") -> DetectionTransform:
    """Build a DetectionTransform from a list of ``{type: NAME, ...}`` mappings, NAME a key of ``TRANSFORMS``."""
    if not isinstance(steps_cfg, (list, tuple)):
        raise ConfigError(f"{where} must be a list of transform mappings, got {type(steps_cfg).__name__}")
    steps = [build_from_cfg(step, TRANSFORMS, where=f"{where}[{i}]") for i, step in enumerate(steps_cfg)]
    return DetectionTransform(steps=steps)
