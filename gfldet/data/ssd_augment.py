"""SSD's training augmentations (mmdetection 3.3's ``Expand``, ``MinIoURandomCrop`` and ``PhotoMetricDistortion``,
``mmdet/datasets/transforms/transforms.py``) as albumentations transforms, used through ``gfldet.data.transforms``.

Each draws its randomness from albumentations' per-transform generator, so that ``DetectionTransform(...,
seed=...)`` reproduces it:

- ``Expand`` ("zoom out"): with probability ``p``, ``ratio ~ U(ratio_range)``; the image is pasted on a
  ``int(h * ratio) x int(w * ratio)`` canvas filled with ``fill`` (RGB, cast to uint8 by truncation as mmdetection's
  ``np.full(..., dtype=uint8)``: the data mean [123.675, 116.28, 103.53] fills [123, 116, 103]) at
  ``left = int(U(0, w * ratio - w))``, ``top = int(U(0, h * ratio - h))``; boxes shift by ``(left, top)`` px.
- ``MinIoURandomCrop``: a mode drawn from ``(1, *min_ious, 0)`` (1: no crop); up to 50 patches per mode with
  ``w' ~ U(min_crop_size * w, w)``, ``h'`` likewise, ``h' / w'`` in [0.5, 2], ``left`` between ``w - w'`` and 1
  (mmdetection's ``numpy.random.uniform(w - w')``: low ``w - w'``, high 1), ``top`` likewise, corners
  ``int(left), int(top), int(left + w'), int(top + h')``, none empty; a patch is taken when
  every box (ignore boxes included, as mmdetection's ``gt_bboxes`` holds them) has IoU >= mode with it and at least one
  box centre lies strictly inside it; boxes (and ignore boxes) whose centre is outside are dropped, the others shifted
  and clipped to the patch. An image without boxes is cropped by any patch of the drawn shape. If every mode fails,
  modes are drawn again until mode 1 (no crop) comes up, as in mmdetection.
- ``PhotoMetricDistortion``: brightness add, contrast multiply (before or after the HSV steps), saturation multiply,
  hue add (degrees, OpenCV float HSV), random channel permutation; each with probability 0.5, on float32 without
  clipping between steps, and the result stays float32 (values below 0 and above 255 included), as mmdetection.
"""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np

from gfldet.config import ConfigError

__all__ = ["Expand", "MinIoURandomCrop", "PhotoMetricDistortion"]


def _pixel_boxes(bboxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """albumentations' normalised boxes [N, 4 + label columns] -> xyxy px [N, 4] (float64), rounded to 1e-3 px.

    albumentations stores float32 fractions of the image size, so pixels come back within ~6e-8 * size (< 5e-4 px
    up to 8000 px): the rounding gives integer and half-pixel boxes back exactly, so that box centres compare with
    the integer crop edges as mmdetection's pixel boxes do (``(10 + 120) / 2 > 65`` must be false).
    """
    boxes = np.asarray(bboxes, np.float64)
    boxes = boxes[:, :4] if boxes.ndim == 2 else boxes.reshape(0, 4)
    return np.round(boxes * [width, height, width, height], 3)


def _normalised_boxes(bboxes: np.ndarray, boxes_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """Copy of ``bboxes`` (label columns kept), coordinates set to ``boxes_px`` normalised by ``width x height`` px."""
    out = np.array(bboxes, copy=True)
    out[:, :4] = boxes_px / [width, height, width, height]
    return out


class Expand(A.DualTransform):
    """mmdetection's ``Expand`` (SSD's "zoom out"): the image pasted at a random place on a larger ``fill`` canvas.

    With probability ``p``: ``ratio ~ U(ratio_range)``, canvas ``int(h * ratio) x int(w * ratio)`` px filled with
    ``fill`` (RGB, uint8 by truncation, as mmdetection's ``np.full(..., dtype=uint8)``), the image at
    ``(left, top) = (int(U(0, w * ratio - w)), int(U(0, h * ratio - h)))`` px; boxes shift by ``(left, top)`` px.
    albumentations has no such transform (``PadIfNeeded`` pads to a fixed size, ``Affine`` resamples), hence this one.
    """

    def __init__(self, *, ratio_range: Sequence[float], fill: Sequence[float], p: float):
        if len(ratio_range) != 2 or not 1 <= ratio_range[0] <= ratio_range[1]:
            raise ConfigError(f"Expand ratio_range must be two numbers [min, max] with 1 <= min <= max; "
                              f"got {ratio_range!r}")
        if len(fill) != 3 or not all(0 <= v <= 255 for v in fill):
            raise ConfigError(f"Expand fill must be three numbers in [0, 255] (R, G, B); got {fill!r}")
        if not 0 <= p <= 1:
            raise ConfigError(f"Expand p must be a probability in [0, 1]; got {p!r}")
        super().__init__(p=p)
        self.ratio_range = [float(r) for r in ratio_range]
        self.fill = [float(v) for v in fill]
        self.fill_uint8 = np.asarray(self.fill).astype(np.uint8)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``canvas_size`` (w, h) px and the image's ``left``, ``top`` px on it (mmdetection's draw order)."""
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(*self.ratio_range)
        left = int(self.py_random.uniform(0, width * ratio - width))
        top = int(self.py_random.uniform(0, height * ratio - height))
        return {"ratio": ratio, "canvas_size": (int(width * ratio), int(height * ratio)), "left": left, "top": top}

    def apply(self, img: np.ndarray, canvas_size: tuple[int, int], left: int, top: int,
              **params: Any) -> np.ndarray:
        """The canvas, as a constant border around the image (one OpenCV call: ~10x faster than fill + copy)."""
        height, width = img.shape[:2]
        return cv2.copyMakeBorder(img, top, canvas_size[1] - height - top, left, canvas_size[0] - width - left,
                                  cv2.BORDER_CONSTANT, value=[int(v) for v in self.fill_uint8])

    def apply_to_bboxes(self, bboxes: np.ndarray, canvas_size: tuple[int, int], left: int, top: int,
                        shape: tuple[int, ...], **params: Any) -> np.ndarray:
        boxes_px = _pixel_boxes(bboxes, shape[1], shape[0]) + [left, top, left, top]
        return _normalised_boxes(bboxes, boxes_px, *canvas_size)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("ratio_range", "fill", "p")


def _patch_ious(patch: Sequence[int], boxes_px: np.ndarray) -> np.ndarray:
    """IoU [N] of the ``patch`` (x1, y1, x2, y2 px) with each box (mmdetection's ``bbox_overlaps``, eps 1e-6)."""
    x1, y1, x2, y2 = patch
    inter_w = (np.minimum(boxes_px[:, 2], x2) - np.maximum(boxes_px[:, 0], x1)).clip(min=0)
    inter_h = (np.minimum(boxes_px[:, 3], y2) - np.maximum(boxes_px[:, 1], y1)).clip(min=0)
    inter = inter_w * inter_h
    areas = (boxes_px[:, 2] - boxes_px[:, 0]) * (boxes_px[:, 3] - boxes_px[:, 1])
    return inter / np.maximum((x2 - x1) * (y2 - y1) + areas - inter, 1e-6)


def _centres_inside(boxes_px: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """[N] bool: the box centre lies strictly inside the ``patch`` (x1, y1, x2, y2 px)."""
    cx, cy = (boxes_px[:, 0] + boxes_px[:, 2]) / 2, (boxes_px[:, 1] + boxes_px[:, 3]) / 2
    return (cx > patch[0]) & (cy > patch[1]) & (cx < patch[2]) & (cy < patch[3])


class MinIoURandomCrop(A.DualTransform):
    """mmdetection's ``MinIoURandomCrop`` (SSD): a random patch whose IoU with every box is at least a drawn mode.

    The algorithm is in the module docstring. The chosen ``mode`` and ``patch`` (x1, y1, x2, y2 px; the whole image
    for mode 1) are in ``self.params`` after a call. albumentations' crops (``RandomSizedBBoxSafeCrop``,
    ``BBoxSafeRandomCrop``, ``AtLeastOneBBoxRandomCrop``) keep every box whole or one box; none has the min-IoU
    rule, hence this one.
    """

    max_trials = 50   # patches per mode, as mmdetection

    def __init__(self, *, min_ious: Sequence[float], min_crop_size: float, bbox_clip_border: bool = True):
        super().__init__(p=1.0)
        if len(min_ious) == 0 or not all(0 <= v <= 1 for v in min_ious):
            raise ConfigError(f"MinIoURandomCrop min_ious must be a non-empty list of IoUs in [0, 1]; got {min_ious!r}")
        if not 0 < min_crop_size <= 1:
            raise ConfigError(f"MinIoURandomCrop min_crop_size must be a fraction of the image side in (0, 1]; "
                              f"got {min_crop_size!r}")
        if not bbox_clip_border:
            raise ConfigError("MinIoURandomCrop bbox_clip_border must be true: albumentations clips boxes to the "
                              "image after every step, so boxes cannot extend beyond the crop")
        self.min_ious = [float(v) for v in min_ious]
        self.min_crop_size = float(min_crop_size)
        self.bbox_clip_border = bool(bbox_clip_border)
        self.sample_mode = (1, *self.min_ious, 0)   # mmdetection 3.3 appends 0: centre rule only

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``mode`` (the IoU drawn; 1 = no crop) and ``patch`` (x1, y1, x2, y2 px in the input image)."""
        height, width = params["shape"][:2]
        boxes_px = _pixel_boxes(data.get("bboxes", np.zeros((0, 4))), width, height)
        while True:   # ends when mode 1 is drawn at the latest, as mmdetection's loop
            mode = self.py_random.choice(self.sample_mode)
            if mode == 1:
                return {"mode": 1, "patch": (0, 0, width, height)}
            for _ in range(self.max_trials):
                patch = self._sample_patch(width, height)
                if patch is not None and self._accepts(patch, boxes_px, mode):
                    return {"mode": mode, "patch": patch}

    def _sample_patch(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """One candidate patch (x1, y1, x2, y2 px), or None if its aspect or size is rejected (mmdetection's draws)."""
        new_w = self.py_random.uniform(self.min_crop_size * width, width)
        new_h = self.py_random.uniform(self.min_crop_size * height, height)
        if new_h / new_w < 0.5 or new_h / new_w > 2:
            return None
        # mmdetection calls numpy's ``random.uniform(w - new_w)``, i.e. low = w - new_w, high = 1: kept as is
        left = self.py_random.uniform(width - new_w, 1)
        top = self.py_random.uniform(height - new_h, 1)
        patch = (int(left), int(top), int(left + new_w), int(top + new_h))
        return None if patch[2] == patch[0] or patch[3] == patch[1] else patch

    @staticmethod
    def _accepts(patch: Sequence[int], boxes_px: np.ndarray, min_iou: float) -> bool:
        """Every box has IoU >= ``min_iou`` with the patch and at least one box centre is inside (no boxes: True)."""
        if len(boxes_px) == 0:
            return True
        return _patch_ious(patch, boxes_px).min() >= min_iou and bool(_centres_inside(boxes_px, patch).any())

    def apply(self, img: np.ndarray, patch: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        return img[patch[1]:patch[3], patch[0]:patch[2]]

    def apply_to_bboxes(self, bboxes: np.ndarray, mode: float, patch: tuple[int, int, int, int],
                        shape: tuple[int, ...], **params: Any) -> np.ndarray:
        """Keep the rows (label columns with them) whose box centre is inside the patch; shift and clip them."""
        if mode == 1:
            return bboxes
        boxes_px = _pixel_boxes(bboxes, shape[1], shape[0])
        keep = _centres_inside(boxes_px, patch)
        patch_w, patch_h = patch[2] - patch[0], patch[3] - patch[1]
        shifted = (boxes_px[keep] - [patch[0], patch[1], patch[0], patch[1]]).clip(0, [patch_w, patch_h] * 2)
        return _normalised_boxes(bboxes[keep], shifted, patch_w, patch_h)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_ious", "min_crop_size", "bbox_clip_border")


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmdetection's ``PhotoMetricDistortion`` (SSD) on an RGB image -> float32 RGB; boxes are untouched.

    On float32, in this order, each step with probability 0.5: ``x += U(-brightness_delta, brightness_delta)``;
    ``x *= U(contrast_range)`` here or after the HSV steps (one coin); to HSV (OpenCV float: H in degrees [0, 360),
    S in [0, 1]); ``S *= U(saturation_range)`` (clipped to [0, 1] only when the factor is > 1, as mmdetection);
    ``H += U(-hue_delta, hue_delta)`` degrees, wrapped once into [0, 360]; back to RGB; a random channel permutation.
    mmdetection works on BGR; ``COLOR_RGB2HSV`` on RGB gives the same H, S, V, and a uniform permutation is one in
    either order. The result stays float32, unclipped, as mmdetection's (collate normalises float and uint8 images
    alike); put it last, as SSD does, so that the other steps see uint8.

    One float32 chain rather than albumentations steps: ``RandomBrightnessContrast`` computes ``x * alpha + beta`` in
    one go and, like ``HueSaturationValue`` (uint8 HSV: hue in 2-degree units, additive saturation) and
    ``ColorJitter`` (saturation as a grayscale blend), rounds and clips to uint8 after each step, which mmdetection
    does not.
    """

    def __init__(self, *, brightness_delta: float, contrast_range: Sequence[float], saturation_range: Sequence[float],
                 hue_delta: float):
        super().__init__(p=1.0)
        if brightness_delta < 0:
            raise ConfigError(f"PhotoMetricDistortion brightness_delta must be >= 0 (uint8 levels); "
                              f"got {brightness_delta!r}")
        for key, value in (("contrast_range", contrast_range), ("saturation_range", saturation_range)):
            if len(value) != 2 or not 0 <= value[0] <= value[1]:
                raise ConfigError(f"PhotoMetricDistortion {key} must be two factors [min, max] with "
                                  f"0 <= min <= max; got {value!r}")
        if not 0 <= hue_delta <= 180:
            raise ConfigError(f"PhotoMetricDistortion hue_delta must be in [0, 180] degrees; got {hue_delta!r}")
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = [float(v) for v in contrast_range]
        self.saturation_range = [float(v) for v in saturation_range]
        self.hue_delta = float(hue_delta)

    def get_params(self) -> dict[str, Any]:
        """The values of one draw; a step that is off gets its neutral value (exact: +0, *1, identity order)."""
        rand = self.py_random

        def coin() -> bool:
            return rand.random() < 0.5

        contrast_before_hsv = coin()
        brightness = rand.uniform(-self.brightness_delta, self.brightness_delta) if coin() else 0.0
        contrast = rand.uniform(*self.contrast_range) if coin() else 1.0
        saturation = rand.uniform(*self.saturation_range) if coin() else 1.0
        hue = rand.uniform(-self.hue_delta, self.hue_delta) if coin() else 0.0
        channel_order = tuple(rand.sample(range(3), 3)) if coin() else (0, 1, 2)
        return {"contrast_before_hsv": contrast_before_hsv, "brightness": brightness, "contrast": contrast,
                "saturation": saturation, "hue": hue, "channel_order": channel_order}

    def apply(self, img: np.ndarray, contrast_before_hsv: bool, brightness: float, contrast: float,
              saturation: float, hue: float, channel_order: tuple[int, int, int], **params: Any) -> np.ndarray:
        """RGB [H, W, 3] -> float32 RGB [H, W, 3] (not clipped): mmdetection's float32 arithmetic."""
        x = img.astype(np.float32)
        x += brightness
        if contrast_before_hsv:
            x *= contrast
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 1] *= saturation
        if saturation > 1:
            hsv[..., 1] = hsv[..., 1].clip(0, 1)
        hsv[..., 0] += hue
        hsv[..., 0][hsv[..., 0] > 360] -= 360
        hsv[..., 0][hsv[..., 0] < 0] += 360
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_before_hsv:
            x *= contrast
        x = x[..., list(channel_order)]
        return np.ascontiguousarray(x)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")
