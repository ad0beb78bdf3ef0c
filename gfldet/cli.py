"""The ``gfldet`` command line: one sub-command per module of ``gfldet.commands``.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only routes.
Modules are imported when their command runs, so ``gfldet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gfldet import __version__
from gfldet.config import nearest
from gfldet.errors import GfldetError

# command name -> (module under gfldet.commands, one-line help)
COMMANDS = {
    "train": ("train", "train a detector from a YAML config (single process or under torchrun)"),
    "test": ("test", "evaluate a checkpoint on a split (COCO AP) or export test-dev results"),
    "infer": ("infer", "run a checkpoint on image files and draw the detections"),
    "eval": ("eval", "COCO AP of a results json (any detector's) against an annotation file"),
    "data": ("data", "dataset tools: voc2coco, split, synth, check, browse, stats"),
    "config": ("show_config", "print the merged config, each value with the file:line that set it"),
    "convert": ("convert", "convert checkpoints from other frameworks (mmdetection)"),
    "benchmark": ("benchmark", "time inference or a training step (images/s, ms per stage, peak memory)"),
    "export": ("export", "export a checkpoint to ONNX (optionally with decode + NMS)"),
    "plot": ("plot", "plot loss, lr and AP curves of one or several work dirs"),
    "report": ("report", "tabulate ablation work dirs beside the paper's numbers (markdown + CSV)"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the ``selected`` command's module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="gfldet", description="Generalized Focal Loss object detection.")
    parser.add_argument("--version", action="version", version=f"gfldet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        if name == selected:
            _load(module_name).add_arguments(command_parser)
    return parser


def _load(module_name: str):
    return importlib.import_module(f"gfldet.commands.{module_name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        guess = nearest(argv[0], COMMANDS)
        hint = f" did you mean '{guess}'?" if guess else ""
        print(f"gfldet: unknown command '{argv[0]}'.{hint} Commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(_load(args._module).run(args) or 0)
    except (GfldetError, FileNotFoundError) as err:
        print(f"gfldet {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gfldet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
