"""``gfldet plot WORK_DIR [WORK_DIR ...] --out FILE.png``: loss, learning-rate and AP curves of runs, overlaid."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("work_dirs", nargs="+", metavar="WORK_DIR", help="training work dirs (with log.jsonl)")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="output PNG")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="legend label of each run (default: the work dir's folder name)")


def run(args: argparse.Namespace) -> int:
    from gfldet.analysis import plot_training_curves

    out = plot_training_curves(args.work_dirs, args.out, names=args.names)
    print(f"training curves of {len(args.work_dirs)} run(s) -> {out}")
    return 0
