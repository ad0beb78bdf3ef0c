"""COCO bbox evaluation and COCO results files (val AP tables, test-dev submissions).

Predictions are the model's per-image dicts (``boxes`` [K,4] xyxy in original-image pixels, ``scores`` [K],
``labels`` [K] int64 in 0..C-1) plus the image id. They become COCO results (``bbox`` = [x, y, w, h] pixels,
``category_id`` = the dataset's original id ``cat_ids[label]``) and are scored with pycocotools or faster-coco-eval.
Every AP follows COCOeval, also without any detection: -1 where the images have no ground truth of that size or
class, 0 where nothing was found.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from gfldet.errors import GfldetError

__all__ = ["BACKENDS", "resolve_backend", "predictions_to_coco", "load_results", "CocoEvaluator", "METRIC_KEYS",
           "RESULT_KEYS",
           "format_ap_table", "check_results_format", "write_submission"]

BACKENDS = ("auto", "pycocotools", "faster_coco_eval")
# COCOeval.stats[0:6] in order.
METRIC_KEYS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``faster_coco_eval`` when installed, else ``pycocotools``; other names are checked."""
    if backend not in BACKENDS:
        raise GfldetError(f"evaluation.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"
    if importlib.util.find_spec(backend) is None:
        raise GfldetError(f"evaluation.backend '{backend}' is not installed (pip install {backend.replace('_', '-')})")
    return backend


def predictions_to_coco(predictions: Iterable[dict], cat_ids: Sequence[int]) -> list[dict]:
    """COCO results from predictions ``{'image_id', 'boxes' [K,4] xyxy px, 'scores' [K], 'labels' [K]}``.

    Labels 0..C-1 map to original category ids via ``cat_ids``; boxes become [x, y, w, h] rounded to 0.01 px.
    """
    lookup = np.asarray(cat_ids, dtype=np.int64)
    results = []
    for pred in predictions:
        boxes = torch.as_tensor(pred["boxes"], dtype=torch.float64).reshape(-1, 4).numpy()
        scores = torch.as_tensor(pred["scores"], dtype=torch.float64).reshape(-1).numpy()
        labels = torch.as_tensor(pred["labels"], dtype=torch.int64).reshape(-1).numpy()
        if labels.size and (labels.min() < 0 or labels.max() >= len(lookup)):
            raise GfldetError(f"image {pred['image_id']}: label outside 0..{len(lookup) - 1}: {labels.max()}")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).round(2)
        for box, score, label in zip(xywh.tolist(), scores.tolist(), lookup[labels].tolist()):
            results.append({"image_id": int(pred["image_id"]), "category_id": int(label), "bbox": box,
                            "score": round(float(score), 5)})
    return results


def load_results(coco_gt, results: list[dict]):
    """pycocotools' ``coco_gt.loadRes(results)`` (quiet), also for an empty list, which ``loadRes`` cannot take:
    then a COCO with the ground truth's images and categories and no annotations, which COCOeval scores as it
    would score any result set (-1 where there is no ground truth, 0 elsewhere). ``loadRes`` adds keys to the
    result dicts: pass copies."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            return coco_gt.loadRes(results)
        empty = COCO()
        empty.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                         "categories": copy.deepcopy(coco_gt.dataset["categories"])}
        empty.createIndex()
    return empty


class CocoEvaluator:
    """Scores COCO bbox results against a ground-truth COCO api object.

    Args:
        coco_gt: pycocotools ``COCO`` of the evaluated split (``dataset.coco``).
        cat_ids: original category id of each contiguous label (``dataset.cat_ids``).
        class_names: name of each contiguous label.
        backend: ``auto`` | ``pycocotools`` | ``faster_coco_eval``.
    """

    def __init__(self, *, coco_gt, cat_ids: Sequence[int], class_names: Sequence[str], backend: str):
        self.coco_gt = coco_gt
        self.cat_ids = list(cat_ids)
        self.class_names = list(class_names)
        self.backend = resolve_backend(backend)
        self._faster_gt = None  # faster-coco-eval's COCO of coco_gt, built on first use and reused

    def evaluate(self, results: list[dict], image_ids: Sequence[int]) -> tuple[dict, str]:
        """Return (metrics, printed COCO summary). metrics holds METRIC_KEYS plus ``per_class`` {name: AP}, in
        [0, 1], or -1 where ``image_ids`` have no ground truth of that size or class (COCOeval's convention).

        ``image_ids`` restricts evaluation to the images that were inferred.
        """
        coco_eval = self._make_eval(results)
        coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
        coco_eval.params.catIds = sorted(self.cat_ids)
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        metrics = {key: float(value) for key, value in zip(METRIC_KEYS, coco_eval.stats[:6])}
        metrics["per_class"] = self._per_class_ap(coco_eval)
        return metrics, summary.getvalue()

    def _make_eval(self, results: list[dict]):
        # loadRes only adds keys (area, id, iscrowd, ...) to each result dict and never edits the bbox lists, so a
        # shallow copy of every dict keeps the caller's results intact at a fraction of deepcopy's cost
        results = [dict(res) for res in results]
        if self.backend == "faster_coco_eval":
            from faster_coco_eval import COCOeval_faster

            gt = self._faster_coco_gt()
            return COCOeval_faster(gt, gt.loadRes(results), "bbox", print_function=print)
        from pycocotools.cocoeval import COCOeval

        return COCOeval(self.coco_gt, load_results(self.coco_gt, results), "bbox")

    def _faster_coco_gt(self):
        """faster-coco-eval's COCO of the ground truth, built once (evaluation only marks GTs ``ignore``, the
        same way every time, as pycocotools does on ``coco_gt`` itself)."""
        if self._faster_gt is None:
            from faster_coco_eval import COCO

            self._faster_gt = COCO(copy.deepcopy(self.coco_gt.dataset))
        return self._faster_gt

    def _per_class_ap(self, coco_eval) -> dict[str, float]:
        """AP@[.5:.95] of each class (area all, maxDets 100) from ``eval['precision']`` [T, R, K, A, M]; -1 for a
        class without ground truth, as COCOeval's summary does for an area."""
        precision = np.asarray(coco_eval.eval["precision"])
        order = sorted(self.cat_ids)
        per_class = {}
        for label, cat_id in enumerate(self.cat_ids):
            values = precision[:, :, order.index(cat_id), 0, -1]
            values = values[values > -1]
            per_class[self.class_names[label]] = float(values.mean()) if values.size else -1.0
        return per_class


def _ap_cell(ap: float) -> str:
    return "-" if ap < 0 else f"{ap:.3f}"  # COCO's -1: no ground truth


def format_ap_table(metrics: dict) -> str:
    """A two-part plain-text table: the six COCO numbers, then AP per class ('-' where there is no ground truth)."""
    lines = ["| " + " | ".join(METRIC_KEYS) + " |", "|" + "---|" * len(METRIC_KEYS),
             "| " + " | ".join(_ap_cell(metrics[k]) for k in METRIC_KEYS) + " |", "", "| class | AP |", "|---|---|"]
    lines += [f"| {name} | {_ap_cell(ap)} |" for name, ap in metrics.get("per_class", {}).items()]
    return "\n".join(lines)


RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def check_results_format(results: list, image_info: dict, *, extra_keys: bool = False,
                         source: str = "the image_info file") -> None:
    """Check COCO results against an ``image_info`` json (images + categories), as the evaluation server would.

    Every result needs a known ``image_id``, a known original ``category_id``, a finite ``score`` and a
    ``bbox`` [x, y, w, h] of numbers with w, h >= 0; other keys only with ``extra_keys``. Raises GfldetError
    listing the first problems; ``source`` names the json in them.
    """
    image_ids = {img["id"] for img in image_info["images"]}
    cat_ids = {cat["id"] for cat in image_info["categories"]}
    problems = []
    for index, res in enumerate(results):
        keys = set(res) if isinstance(res, dict) else set()
        if not set(RESULT_KEYS) <= keys or (keys != set(RESULT_KEYS) and not extra_keys):
            problems.append(f"result {index}: keys {sorted(keys)}, expected bbox, category_id, image_id, score")
            continue
        if not _is_number(res["image_id"]) or res["image_id"] not in image_ids:
            problems.append(f"result {index}: image_id {res['image_id']!r} is not an image of {source}")
        if not _is_number(res["category_id"]) or res["category_id"] not in cat_ids:
            problems.append(f"result {index}: category_id {res['category_id']!r} is not a category of {source}")
        box = res["bbox"]
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(map(_is_finite, box))
                and box[2] >= 0 and box[3] >= 0):
            problems.append(f"result {index}: bbox {box!r} is not [x, y, w, h] with w, h >= 0")
        if not _is_finite(res["score"]):
            problems.append(f"result {index}: score {res['score']!r} is not a finite number")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise GfldetError(f"results do not match {source}:\n  " + "\n  ".join(problems[:10]) + more)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return _is_number(value) and math.isfinite(value)


def write_submission(results: list[dict], out_dir: str | Path, *, name: str, split: str = "test-dev2017") -> Path:
    """Write ``detections_<split>_<name>_results.json`` and its ``.zip`` (the evaluation server's format).

    Returns the zip path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"detections_{split}_{name}_results.json"
    json_path.write_text(json.dumps(results))
    zip_path = json_path.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(json_path, arcname=json_path.name)
    return zip_path
