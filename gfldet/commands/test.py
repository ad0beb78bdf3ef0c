"""``gfldet test CONFIG CKPT``: COCO bbox AP of a checkpoint, or the test-dev submission files."""
from __future__ import annotations

import argparse
from pathlib import Path

from gfldet.commands import add_opts_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config the checkpoint was trained with")
    parser.add_argument("checkpoint", help="checkpoint file (e.g. work_dirs/<name>/best.pth)")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="data split to run on (test = data.test, e.g. COCO test-dev)")
    parser.add_argument("--format-only", action="store_true",
                        help="only write results: detections_test-dev2017_<name>_results.json and its zip")
    parser.add_argument("--analyze", action="store_true",
                        help="also AP per class and size, the types of false positives and precision-recall "
                             "curves (error_analysis.json / .png, pr_curves.png in the work dir)")
    parser.add_argument("--work-dir", help="where metrics.json / results.json go (default: the checkpoint's folder)")
    add_opts_argument(parser)


def run(args: argparse.Namespace) -> int:
    from gfldet.config import load_config
    from gfldet.engine.testing import evaluate_checkpoint

    cfg = load_config(args.config, args.opts)
    work_dir = Path(args.work_dir) if args.work_dir else Path(args.checkpoint).parent
    evaluate_checkpoint(cfg, args.checkpoint, split=args.split, work_dir=work_dir, format_only=args.format_only,
                        name=Path(args.config).stem, analyze=args.analyze)
    return 0
