"""COCO bbox evaluation of the same detections: pycocotools vs faster-coco-eval (identical 12 stats required).

    python benchmarks/bench_eval_backends.py [--quick] [--images 5000] [--runs 3]

Ground truth and detections are synthetic, built here (no download): ``--images`` images of 640x480 with 1-15
objects each over COCO's 80 non-contiguous category ids (about 1% crowd), and per image up to 100 detections:
a jittered copy of most GT boxes (sometimes with a wrong class) plus random false positives, random scores.
Two rows per backend: the library alone (loadRes + evaluate + accumulate + summarize) and gfldet's
``CocoEvaluator.evaluate`` (what ``gfldet test`` runs: the same plus per-class AP and copies of its inputs).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io

import numpy as np

import _common
from gfldet.engine.benchmark import StageTimes, median_ratio, run_interleaved
from gfldet.engine.evaluator import CocoEvaluator

# the two libraries sum precisions in different orders: float64 rounding (~1e-16) is the only allowed difference
TOLERANCE = 1e-12
COCO_CAT_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def synthetic_coco(num_images: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """(COCO ground-truth dict, COCO results list) with boxes in [x, y, w, h] pixels."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id:012d}.jpg"})
        count = int(rng.integers(1, 16))
        wh = rng.uniform(4, 300, size=(count, 2))
        xy = rng.uniform(0, 1, size=(count, 2)) * (np.array([640, 480]) - wh)
        cats = rng.choice(COCO_CAT_IDS, size=count)
        for box, cat in zip(np.concatenate([xy, wh], axis=1), cats):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cat),
                                "bbox": box.round(2).tolist(), "area": float(box[2] * box[3]),
                                "iscrowd": int(rng.random() < 0.01)})
            if rng.random() < 0.85:
                noisy = box + rng.normal(0, 0.08, size=4) * np.array([box[2], box[3], box[2], box[3]])
                label = cat if rng.random() < 0.9 else rng.choice(COCO_CAT_IDS)
                results.append({"image_id": image_id, "category_id": int(label),
                                "bbox": np.maximum(noisy, 1).round(2).tolist(),
                                "score": round(float(rng.random()), 5)})
        for _ in range(int(rng.integers(0, 100 - count))):
            box = np.concatenate([rng.uniform(0, 400, 2), rng.uniform(4, 200, 2)])
            results.append({"image_id": image_id, "category_id": int(rng.choice(COCO_CAT_IDS)),
                            "bbox": box.round(2).tolist(), "score": round(float(rng.random()) * 0.5, 5)})
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in COCO_CAT_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def library_eval(backend: str, gt: dict, results: list[dict]):
    """Stats [12] from the backend's own COCO + COCOeval classes."""
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        if backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return np.asarray(coco_eval.stats[:12], dtype=np.float64)


def gfldet_eval(backend: str, gt: dict, results: list[dict]) -> dict:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
    evaluator = CocoEvaluator(coco_gt=coco_gt, cat_ids=COCO_CAT_IDS, class_names=[str(c) for c in COCO_CAT_IDS],
                              backend=backend)
    return evaluator.evaluate(results, [img["id"] for img in gt["images"]])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_common_arguments(parser, default_runs=3)
    parser.add_argument("--images", type=int, default=5000)
    args = parser.parse_args()
    _common.setup(args)
    num_images = 200 if args.quick else args.images
    gt, results = synthetic_coco(num_images)
    stats = {b: library_eval(b, gt, results) for b in ("pycocotools", "faster_coco_eval")}
    max_diff = float(np.abs(stats["pycocotools"] - stats["faster_coco_eval"]).max())
    identical = max_diff <= TOLERANCE

    def one_stage(fn, backend):
        return [("evaluate", lambda _: fn(backend, gt, results))], None

    pipelines = {f"{kind} {backend}": one_stage(fn, backend)
                 for kind, fn in (("library", library_eval), ("gfldet CocoEvaluator", gfldet_eval))
                 for backend in ("pycocotools", "faster_coco_eval")}
    import torch

    times = run_interleaved(pipelines, runs=args.runs, warmup=args.warmup, device=torch.device("cpu"))
    body = [f"{num_images} synthetic images, {len(gt['annotations'])} GT boxes, {len(results)} detections; "
            f"{args.runs} interleaved rounds. The 12 stats are **{'identical' if identical else 'DIFFERENT'}** "
            f"(max abs difference {max_diff:.1e}, tolerance {TOLERANCE:.0e} for float64 summation order); "
            f"AP = {stats['pycocotools'][0]:.4f}.", "",
            "| evaluation | wall s | CPU s | speed-up vs pycocotools, wall | speed-up, CPU |",
            "|---|---:|---:|---:|---:|"]
    for kind in ("library", "gfldet CocoEvaluator"):
        base: StageTimes = times[f"{kind} pycocotools"]
        for backend in ("pycocotools", "faster_coco_eval"):
            t = times[f"{kind} {backend}"]
            body.append(f"| {kind} {backend} | {t.median_total():.2f} | {t.median_total('cpu'):.2f} | "
                        f"{median_ratio(base, t):.2f}x | {median_ratio(base, t, 'cpu'):.2f}x |")
    _common.write_report(args, name="eval_backends", title="COCO evaluation: faster-coco-eval vs pycocotools",
                         body=body)
    if not identical:
        raise SystemExit("the two backends disagree")


if __name__ == "__main__":
    main()
