"""``gfldet config CONFIG [--opts ...]``: the merged config (its ``_base_`` chain and overrides) as YAML.

Each key is followed by ``# file:line`` (or ``# override #N '...'``): where the value that wins was set, which
answers "which base file does this come from?" without reading the chain. ``--plain`` prints the YAML alone
(``gfldet train`` saves it in ``WORK_DIR/config.yaml`` after filling in what it derives, e.g. the class count).
"""
from __future__ import annotations

import argparse

from gfldet.commands import add_opts_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config")
    parser.add_argument("--plain", action="store_true", help="without the origin comments")
    add_opts_argument(parser)


def run(args: argparse.Namespace) -> int:
    import yaml

    from gfldet.config import annotated_yaml, load_config

    cfg = load_config(args.config, args.opts)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip() if args.plain else annotated_yaml(cfg))
    return 0
