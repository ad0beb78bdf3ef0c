"""Error analysis of COCO detections: AP per class and object size, and what the false positives are.

False-positive types (one per detection that is not a true positive at IoU >= ``fg_iou``, checked in this order):

- ``duplicate``: a GT of the detection's class overlaps it with IoU >= ``fg_iou`` but every such GT was already
  matched by a higher-scoring detection;
- ``confusion``: a GT of another class overlaps it with IoU >= ``fg_iou`` (right place, wrong class);
- ``localisation``: its best same-class IoU is in [``bg_iou``, ``fg_iou``) (right class, box off);
- ``confusion`` again when only a GT of another class overlaps with IoU in [``bg_iou``, ``fg_iou``) (wrong class
  and box off: counted as confusion, the class being the bigger error);
- ``background``: no GT of any class overlaps with IoU >= ``bg_iou``.

Matching follows COCOeval: per image and class, detections in decreasing score order take the unmatched GT with
the highest IoU >= ``fg_iou``; at most ``max_dets`` detections per image; a detection that is not a true positive
but lies on a crowd region of its class (intersection over detection area >= ``fg_iou``) is ignored. Only
detections scoring at least ``score_thr`` are classified (low-score detections are mostly background and would
drown the other types); GTs that no such detection found are counted as ``missed``.
"""
from __future__ import annotations

import contextlib
import io
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from gfldet.analysis.figures import save_figure

__all__ = ["FP_TYPES", "SIZES", "error_analysis", "format_error_analysis", "plot_error_analysis", "plot_pr_curves"]

FP_TYPES = ("localisation", "confusion", "duplicate", "background")
SIZES = ("all", "small", "medium", "large")  # COCOeval areaRng order


def error_analysis(coco_gt, detections: list[dict], *, image_ids: Sequence[int] | None = None,
                   score_thr: float = 0.3, fg_iou: float = 0.5, bg_iou: float = 0.1, max_dets: int = 100) -> dict:
    """Analyse COCO-format ``detections`` ({image_id, category_id, bbox [x,y,w,h] px, score}) against ``coco_gt``
    (a pycocotools COCO) on ``image_ids`` (default: every image of ``coco_gt``).

    Returns {"ap": {size: AP@[.5:.95]}, "ap50": {size: AP@.5}, "per_class": {class name: {size: AP}},
    "pr_curves": {"recall": [101 recall points], "iou50" / "iou75": {class name: [101 precisions] or None}},
    "false_positives": {type: count}, "fp_shares": {type: fraction of false positives}, "true_positives",
    "missed", "num_gt", "settings": {...}}; AP is None (JSON null) where a class or size has no GT, also
    without any detection (as COCOeval: 0 where there is GT). The precision-recall curves are COCOeval's
    (all sizes, ``max_dets``): interpolated precision at each recall point, 0 beyond the largest recall reached.
    """
    image_ids = sorted(int(i) for i in (coco_gt.getImgIds() if image_ids is None else image_ids))
    ap, ap50, per_class, pr_curves = _coco_ap(coco_gt, detections, image_ids, max_dets)
    fp_types, true_positives, missed, num_gt = _classify(coco_gt, detections, image_ids, score_thr=score_thr,
                                                         fg_iou=fg_iou, bg_iou=bg_iou, max_dets=max_dets)
    total_fp = sum(fp_types.values())
    return {"ap": ap, "ap50": ap50, "per_class": per_class, "pr_curves": pr_curves,
            "false_positives": {t: fp_types[t] for t in FP_TYPES},
            "fp_shares": {t: fp_types[t] / total_fp if total_fp else 0.0 for t in FP_TYPES},
            "true_positives": true_positives, "missed": missed, "num_gt": num_gt,
            "settings": {"score_thr": score_thr, "fg_iou": fg_iou, "bg_iou": bg_iou, "max_dets": max_dets}}


def _mean_precision(precision: np.ndarray) -> float | None:
    """Mean of COCOeval precision entries that have GT (not -1); None when none has."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _coco_ap(coco_gt, detections: list[dict], image_ids: list[int],
             max_dets: int) -> tuple[dict, dict, dict, dict]:
    """COCOeval AP per size (all classes), AP50 per size, AP per class and size, and the per-class
    precision-recall curves at IoU 0.5 and 0.75."""
    from pycocotools.cocoeval import COCOeval

    from gfldet.engine.evaluator import load_results

    names = [coco_gt.cats[c]["name"] for c in sorted(coco_gt.getCatIds())]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, load_results(coco_gt, [dict(d) for d in detections]), "bbox")
        coco_eval.params.imgIds = image_ids
        coco_eval.params.maxDets = [1, 10, max_dets]
        coco_eval.evaluate()
        coco_eval.accumulate()
    precision = coco_eval.eval["precision"][..., -1]  # [T, R, K, A] at max_dets
    ap = {size: _mean_precision(precision[:, :, :, a]) for a, size in enumerate(SIZES)}
    ap50 = {size: _mean_precision(precision[0, :, :, a]) for a, size in enumerate(SIZES)}
    per_class = {name: {size: _mean_precision(precision[:, :, k, a]) for a, size in enumerate(SIZES)}
                 for k, name in enumerate(names)}
    iou_index = {round(float(t), 2): i for i, t in enumerate(coco_eval.params.iouThrs)}
    pr_curves = {"recall": [round(float(r), 2) for r in coco_eval.params.recThrs]}
    for key, iou in (("iou50", 0.5), ("iou75", 0.75)):
        curves = precision[iou_index[iou], :, :, 0]  # [R, K], area all
        pr_curves[key] = {name: None if (curves[:, k] < 0).all() else curves[:, k].round(4).tolist()
                          for k, name in enumerate(names)}
    return ap, ap50, per_class, pr_curves


def _iou(dets_xywh: np.ndarray, gts_xywh: np.ndarray, crowd: Sequence[bool]) -> np.ndarray:
    """[D, G] IoU (intersection over detection area for crowd GTs), with pycocotools' box IoU."""
    from pycocotools import mask as mask_utils

    if not len(dets_xywh) or not len(gts_xywh):
        return np.zeros((len(dets_xywh), len(gts_xywh)))
    return np.asarray(mask_utils.iou(dets_xywh.tolist(), gts_xywh.tolist(), [int(c) for c in crowd]))


def _classify(coco_gt, detections: list[dict], image_ids: list[int], *, score_thr: float, fg_iou: float,
              bg_iou: float, max_dets: int) -> tuple[Counter, int, int, int]:
    """(false positives per type, true positives, missed GTs, GTs) over ``image_ids``."""
    by_image: dict[int, list[dict]] = {}
    for det in detections:
        by_image.setdefault(det["image_id"], []).append(det)
    fp_types, true_positives, missed, num_gt = Counter(), 0, 0, 0
    for image_id in image_ids:
        gts = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_id))
        dets = sorted(by_image.get(image_id, []), key=lambda d: -d["score"])[:max_dets]
        dets = [d for d in dets if d["score"] >= score_thr]
        types, matched = _classify_image(dets, gts, fg_iou=fg_iou, bg_iou=bg_iou)
        fp_types.update(types)
        real = [not g.get("iscrowd", 0) for g in gts]
        true_positives += int(matched.sum())
        num_gt += sum(real)
        missed += sum(real) - int(matched.sum())
    return fp_types, true_positives, missed, num_gt


def _classify_image(dets: list[dict], gts: list[dict], *, fg_iou: float,
                    bg_iou: float) -> tuple[list[str], np.ndarray]:
    """FP types of one image's detections (score order) and which GTs were matched ([G] bool)."""
    crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], dtype=bool)
    iou = _iou(np.array([d["bbox"] for d in dets]).reshape(-1, 4), np.array([g["bbox"] for g in gts]).reshape(-1, 4),
               crowd)
    gt_cat = np.array([g["category_id"] for g in gts])
    matched = np.zeros(len(gts), dtype=bool)
    types = []
    for d, det in enumerate(dets):
        same = gt_cat == det["category_id"]
        free = np.where(same & ~crowd & ~matched & (iou[d] >= fg_iou), iou[d], -1.0)
        if free.size and free.max() >= 0:
            matched[free.argmax()] = True
            continue
        if _max(iou[d], same & crowd) >= fg_iou:
            continue  # on a crowd region of its class: ignored, as COCOeval does (before any other match)
        same_iou = _max(iou[d], same & ~crowd)
        other_iou = _max(iou[d], ~same & ~crowd)
        if same_iou >= fg_iou:
            types.append("duplicate")
        elif other_iou >= fg_iou:
            types.append("confusion")
        elif same_iou >= bg_iou:
            types.append("localisation")
        elif other_iou >= bg_iou:
            types.append("confusion")
        else:
            types.append("background")
    return types, matched & ~crowd


def _max(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].max()) if mask.any() else 0.0


def format_error_analysis(result: dict) -> str:
    """Markdown tables: AP per class and size (with the all-class row), then the false positives by type."""
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"  # None: no GT of that class / size

    lines = ["| class | " + " | ".join(f"AP {s}" for s in SIZES) + " |", "|---" * (len(SIZES) + 1) + "|"]
    rows = [("**all**", result["ap"])] + list(result["per_class"].items())
    lines += [f"| {name} | " + " | ".join(cell(aps[s]) for s in SIZES) + " |" for name, aps in rows]
    settings = result["settings"]
    lines += ["", f"False positives (score >= {settings['score_thr']}, IoU fg {settings['fg_iou']} / "
                  f"bg {settings['bg_iou']}): {sum(result['false_positives'].values())}; true positives "
                  f"{result['true_positives']}; missed GTs {result['missed']} of {result['num_gt']}", "",
              "| type | count | share |", "|---|---|---|"]
    lines += [f"| {t} | {result['false_positives'][t]} | {result['fp_shares'][t]:.1%} |" for t in FP_TYPES]
    return "\n".join(lines)


def plot_pr_curves(result: dict, out_path: str | Path) -> Path:
    """PNG (1100x450 px at 100 dpi): precision over recall at IoU 0.5 and 0.75, one line per class (named when
    there are at most 10 classes) and their mean (bold), whose area is the AP of that IoU."""
    curves = result["pr_curves"]
    recall = np.asarray(curves["recall"])
    fig = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    for ax, key, iou, ap_name in zip(fig.subplots(1, 2), ("iou50", "iou75"), ("0.5", "0.75"), ("AP50", "AP75")):
        present = {name: np.asarray(p) for name, p in curves[key].items() if p is not None}
        few = len(present) <= 10
        for index, (name, precision) in enumerate(present.items()):
            ax.plot(recall, precision, linewidth=1, color=f"C{index}" if few else "0.7",
                    label=f"{name} {precision.mean():.3f}" if few else None)
        if present:
            mean = np.mean(list(present.values()), axis=0)
            ax.plot(recall, mean, linewidth=3, color="k", label=f"all classes {mean.mean():.3f}")
            ax.legend(fontsize="small", loc="lower left")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"precision-recall at IoU {iou} ({ap_name} in the legend)")
        ax.grid(alpha=0.3)
    return save_figure(fig, out_path)


def plot_error_analysis(result: dict, out_path: str | Path) -> Path:
    """PNG (1100x450 px at 100 dpi): AP per class and size as grouped bars ('n/a' where there is no GT), and the
    false-positive shares."""
    fig = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    ax_ap, ax_fp = fig.subplots(1, 2, width_ratios=(2, 1))
    rows = [("all", result["ap"])] + list(result["per_class"].items())
    x = np.arange(len(rows))
    width = 0.8 / len(SIZES)
    missing = np.array([[aps[size] is None for size in SIZES] for _, aps in rows])  # [rows, sizes]: no GT
    values = np.array([[aps[size] or 0.0 for size in SIZES] for _, aps in rows])
    for s, size in enumerate(SIZES):
        ax_ap.bar(x + (s - 1.5) * width, values[:, s], width, label=size, color=f"C{s}")
        for row in np.flatnonzero(missing[:, s]):
            ax_ap.text(x[row] + (s - 1.5) * width, 0, "n/a", rotation=90, ha="center", va="bottom",
                       fontsize="x-small", color=f"C{s}")
    ax_ap.set_xticks(x, [name for name, _ in rows], rotation=30 if len(rows) > 6 else 0, ha="right"
                     if len(rows) > 6 else "center")
    top = max(0.1, 1.25 * float(values.max()))  # zoom in on weak models; room for the legend above the bars
    ax_ap.set(ylabel="AP@[.5:.95]", ylim=(0, top), title="AP per class and object size")
    if top > 1:
        ax_ap.set_yticks(np.linspace(0, 1, 6))
    ax_ap.legend(fontsize="small", ncols=len(SIZES))
    ax_ap.grid(axis="y", alpha=0.3)
    shares = [result["fp_shares"][t] for t in FP_TYPES]
    bars = ax_fp.barh(FP_TYPES, shares, color=["C4", "C5", "C6", "C7"])
    ax_fp.bar_label(bars, [f"{result['false_positives'][t]} ({share:.0%})" for t, share in zip(FP_TYPES, shares)],
                    padding=3)
    ax_fp.invert_yaxis()
    total = sum(result["false_positives"].values())
    ax_fp.set(xlim=(0, 1.3), xlabel="share of false positives",
              title=f"{total} false positives (score >= {result['settings']['score_thr']})\n"
                    f"TP {result['true_positives']}, missed {result['missed']} of {result['num_gt']} GT")
    return save_figure(fig, out_path)
