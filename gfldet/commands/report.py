"""``gfldet report WORK_DIRS... [--out DIR] [--tables 1a,3]``: our ablation numbers beside the paper's."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("work_dirs", nargs="+", metavar="WORK_DIR",
                        help="work dirs of ablation runs (config.yaml with an 'ablation' key; metrics.json "
                             "from gfldet test)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write report.md and table_<key>.{md,csv} here (default: print only)")
    parser.add_argument("--tables", default=None, metavar="KEYS",
                        help="comma-separated paper tables to report, e.g. 1a,3 (default: those with runs)")


def run(args: argparse.Namespace) -> int:
    from gfldet.engine.report import write_report

    tables = [key.strip() for key in args.tables.split(",") if key.strip()] if args.tables else None
    print(write_report(args.work_dirs, args.out, tables))
    return 0
