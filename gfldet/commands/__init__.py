"""Sub-commands of the ``gfldet`` CLI: each module has ``add_arguments(parser)`` and ``run(args) -> int``."""
from __future__ import annotations

import argparse

__all__ = ["add_opts_argument"]


def add_opts_argument(parser: argparse.ArgumentParser) -> None:
    """``--opts KEY=VALUE ...``: config overrides, applied in order; a repeated ``--opts`` adds to the earlier ones."""
    parser.add_argument("--opts", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. train.max_epochs=24 optimizer.lr=0.02 (repeatable)")
