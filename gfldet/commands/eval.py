"""``gfldet eval ANN_FILE RESULTS_FILE``: COCO bbox AP of any detector's results json, with gfldet's evaluator.

The same numbers as ``gfldet test`` for the same detections: results of mmdetection (``--format-only``),
torchvision or ultralytics (``save_json``) are scored exactly as gfldet's own (backend, AP table, per-class AP,
error analysis). Their image and category ids must be the annotation file's (nothing is mapped: ultralytics
writes file stems and 0-based classes for non-COCO datasets, which are refused with the first mismatches).
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gfldet.engine.evaluator import BACKENDS

    parser.add_argument("ann_file", help="COCO annotation json (the ground truth)")
    parser.add_argument("results_file", help="COCO results json: a list of {image_id, category_id, bbox, score}")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto = faster_coco_eval when installed, else pycocotools")
    parser.add_argument("--analyze", action="store_true",
                        help="also AP per class and size, the types of false positives and precision-recall "
                             "curves (needs --out)")
    parser.add_argument("--out", help="folder for metrics.json (and error_analysis.json / .png, pr_curves.png)")


def run(args: argparse.Namespace) -> int:
    from gfldet.engine.testing import evaluate_results_file

    evaluate_results_file(args.ann_file, args.results_file, backend=args.backend, work_dir=args.out,
                          analyze=args.analyze)
    return 0
