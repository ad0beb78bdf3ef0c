"""GFL's learned box-side distributions: which prior produced each detection, and a picture of its four sides.

For every kept detection GFL predicts, per side (left, top, right, bottom), a softmax over bins {0..reg_max} of
width Delta in *stride units*; the box side sits at the expectation. Bin i of a side is ``i * Delta * stride``
resized-image pixels from the prior centre, i.e. ``i * Delta * stride / s`` original pixels for the resize factor
``s`` of that axis. A sharp distribution means a confident edge; a flat or two-peaked one an ambiguous edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from gfldet.models.heads.dense_head import flatten_levels

__all__ = ["SIDES", "DistributionDetections", "detections_with_distributions", "plot_box_distributions",
           "save_box_distributions"]

SIDES = ("left", "top", "right", "bottom")
SIDE_COLOURS = ("tab:blue", "tab:green", "tab:orange", "tab:red")
FIGURE_INCHES, FIGURE_DPI = (7.0, 6.0), 100  # 700 x 600 px PNG
MIN_SHOWN_PROB = 0.01  # bins below this probability may fall outside the image crop


@dataclass(frozen=True)
class DistributionDetections:
    """One image's detections (as ``model.predict`` returns them) with their priors' distributions.

    boxes: [K, 4] xyxy original px; scores: [K]; labels: [K] int64 0..C-1; side_logits: [K, 4, n+1] distribution
    logits of the sides l, t, r, b; centers: [K, 2] prior centre (x, y) original px; strides: [K] level stride
    (resized px per stride unit); bin_width: Delta (stride units); scale_factor: (sx, sy) resized / original.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    side_logits: torch.Tensor
    centers: torch.Tensor
    strides: torch.Tensor
    bin_width: float
    scale_factor: tuple[float, float]

    def __len__(self) -> int:
        return len(self.boxes)


@torch.no_grad()
def detections_with_distributions(model: torch.nn.Module, images: torch.Tensor,
                                  image_sizes: Sequence[tuple[int, int]],
                                  scale_factors: Sequence[tuple[float, float]]) -> list[DistributionDetections]:
    """Run ``model`` (a GFL Detector, in eval mode) and attach to each detection its prior's distribution logits.

    Arguments as ``Detector.predict`` (images [N, 3, H, W] normalised and padded). The detections are exactly
    ``model.head.predict``'s, whose ``prior_idx`` names the prior behind each one.
    """
    head = model.head
    if not hasattr(head, "reg_max"):
        raise TypeError(f"{type(head).__name__} does not predict box distributions (no reg_max): GFL heads only")
    cls_scores, bbox_preds = model.raw_outputs(images)
    results = head.predict(cls_scores, bbox_preds, image_sizes, scale_factors)
    priors = head.priors_for(cls_scores)
    reg = flatten_levels(bbox_preds)  # [N, P, 4(n+1)]
    bin_width = float(head.bins[1] - head.bins[0])
    out = []
    for i, result in enumerate(results):
        kept_prior = result["prior_idx"]
        scale = torch.tensor(scale_factors[i], dtype=reg.dtype, device=reg.device)
        out.append(DistributionDetections(
            boxes=result["boxes"], scores=result["scores"], labels=result["labels"],
            side_logits=reg[i, kept_prior].reshape(-1, 4, head.reg_max + 1),
            centers=priors.centers_px[kept_prior] / scale, strides=priors.strides[kept_prior],
            bin_width=bin_width, scale_factor=tuple(float(s) for s in scale_factors[i])))
    return out


def _crop_window(box: np.ndarray, xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[x0, y0, x1, y1] integer window holding the box and the edge positions ``xs`` / ``ys`` (px) with a margin,
    clipped to the image of ``shape`` (H, W)."""
    lo = np.array([min(box[0], xs.min()), min(box[1], ys.min())])
    hi = np.array([max(box[2], xs.max()), max(box[3], ys.max())])
    margin = 0.15 * (hi - lo) + 4
    height, width = shape
    return np.array([max(0, np.floor(lo[0] - margin[0])), max(0, np.floor(lo[1] - margin[1])),
                     min(width, np.ceil(hi[0] + margin[0])), min(height, np.ceil(hi[1] + margin[1]))], dtype=int)


def plot_box_distributions(image_rgb: np.ndarray, *, box: Sequence[float], center: Sequence[float],
                           side_logits: torch.Tensor | np.ndarray, stride: float, bin_width: float = 1.0,
                           scale_factor: Sequence[float] = (1.0, 1.0), title: str = "") -> Figure:
    """A figure (700x600 px at 100 dpi): the image crop around the detection, with the left/right edge
    distributions below it on the crop's x axis and the top/bottom ones beside it on its y axis.

    image_rgb: [H, W, 3] uint8 original image; box: xyxy original px; center: prior centre (x, y) original px;
    side_logits: [4, n+1] logits of l, t, r, b; stride: level stride (resized px per stride unit); bin_width: Delta
    (stride units); scale_factor: (sx, sy) resized / original. Each bar is one bin at its edge position in original
    px; a dashed line marks each side's expectation (the predicted edge, unless the box was clipped to the image);
    the legends give each distribution's standard deviation in px (small = confident edge).
    """
    logits = torch.as_tensor(np.asarray(side_logits), dtype=torch.float64)
    if logits.dim() != 2 or logits.shape[0] != 4:
        raise ValueError(f"side_logits must be [4, n+1] (l, t, r, b), got {tuple(logits.shape)}")
    probs = logits.softmax(dim=1).numpy()
    sx, sy = (float(s) for s in scale_factor)
    step = bin_width * stride / np.array([sx, sy, sx, sy])  # original px per bin, per side
    offsets = np.arange(probs.shape[1])[None] * step[:, None]  # [4, n+1] distance from the centre
    cx, cy = (float(v) for v in center)
    positions = np.stack([cx - offsets[0], cy - offsets[1], cx + offsets[2], cy + offsets[3]])
    expectation = (probs * positions).sum(axis=1)
    spread = np.sqrt((probs * (positions - expectation[:, None]) ** 2).sum(axis=1))  # std of each side, px
    box = np.asarray(box, dtype=float)
    shown = probs >= MIN_SHOWN_PROB  # the crop holds every bin with some mass, not the whole support
    x0, y0, x1, y1 = _crop_window(box, positions[0::2][shown[0::2]], positions[1::2][shown[1::2]],
                                  image_rgb.shape[:2])

    fig = Figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI, layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=(3, 1), height_ratios=(3, 1))
    ax_img = fig.add_subplot(grid[0, 0])
    ax_x = fig.add_subplot(grid[1, 0], sharex=ax_img)
    ax_y = fig.add_subplot(grid[0, 1], sharey=ax_img)
    ax_img.imshow(image_rgb[y0:y1, x0:x1], extent=(x0, x1, y1, y0), interpolation="nearest")
    ax_img.add_patch(_rectangle(box))
    ax_img.plot([cx], [cy], marker="+", color="white", markersize=10, mew=2)
    ax_img.set(xlim=(x0, x1), ylim=(y1, y0), title=title)
    for side in range(4):
        horizontal = side in (0, 2)  # l, r: x positions
        ax = ax_x if horizontal else ax_y
        bar = ax.bar if horizontal else ax.barh
        bar(positions[side], probs[side], 0.9 * step[side], color=SIDE_COLOURS[side], alpha=0.7,
            label=f"{SIDES[side]} (std {spread[side]:.1f} px)")
        line = ax.axvline if horizontal else ax.axhline
        line(expectation[side], color=SIDE_COLOURS[side], linestyle="--", linewidth=1.2)
        (ax_img.axvline if horizontal else ax_img.axhline)(expectation[side], color=SIDE_COLOURS[side],
                                                            linestyle="--", linewidth=0.8, alpha=0.8)
    ax_x.set(ylabel="probability", xlabel="edge x (px)", ylim=(0, 1))
    ax_y.set(xlabel="probability", ylabel="edge y (px)", xlim=(0, 1))
    ax_legend = fig.add_subplot(grid[1, 1])  # the free corner holds one legend for the four sides
    ax_legend.axis("off")
    handles = [h for ax in (ax_x, ax_y) for h in ax.get_legend_handles_labels()[0]]
    ax_legend.legend(handles, [h.get_label() for h in handles], loc="center", fontsize="small", frameon=False)
    return fig


def _rectangle(box: np.ndarray):
    from matplotlib.patches import Rectangle

    return Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, edgecolor="yellow",
                     linewidth=1.5)


def save_box_distributions(image_rgb: np.ndarray, detections: DistributionDetections, out_dir: str | Path, *,
                           stem: str = "det", top_k: int = 5, min_score: float = 0.0,
                           class_names: Sequence[str] | None = None) -> list[Path]:
    """One PNG per detection (the ``top_k`` best scoring at least ``min_score``) as ``out_dir/{stem}_{rank}.png``;
    returns the paths. image_rgb: the original image [H, W, 3] uint8 the detections refer to."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    count = int((detections.scores >= min_score).sum())  # detections come best first
    for rank in range(min(top_k, count)):
        label = int(detections.labels[rank])
        name = class_names[label] if class_names else str(label)
        stride = float(detections.strides[rank])
        fig = plot_box_distributions(
            image_rgb, box=detections.boxes[rank].tolist(), center=detections.centers[rank].tolist(),
            side_logits=detections.side_logits[rank].cpu(), stride=stride, bin_width=detections.bin_width,
            scale_factor=detections.scale_factor,
            title=f"{name} {float(detections.scores[rank]):.2f} (stride {stride:g})")
        paths.append(out_dir / f"{stem}_{rank}.png")
        fig.savefig(paths[-1])
    return paths
