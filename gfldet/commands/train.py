"""``gfldet train CONFIG``: train a detector (single process, or one process per GPU under torchrun)."""
from __future__ import annotations

import argparse
from pathlib import Path

from gfldet.commands import add_opts_argument
from gfldet.errors import GfldetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config, e.g. configs/gfl/gfl_r50_fpn_1x_coco.yaml")
    parser.add_argument("--work-dir", help="output directory (default: work_dirs/<config name>)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                        help="resume the full training state; without CKPT: WORK_DIR/latest.pth")
    parser.add_argument("--load-from", metavar="CKPT", help="initialise the model weights only (fine-tuning)")
    parser.add_argument("--amp", choices=("off", "fp16", "bf16"), help="mixed precision (overrides train.amp)")
    parser.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                        help="torch.compile the training forward (overrides train.compile; MODE default, "
                             "reduce-overhead, max-autotune or max-autotune-no-cudagraphs; default: default)")
    add_opts_argument(parser)


def default_work_dir(config: str) -> Path:
    return Path("work_dirs") / Path(config).stem


def refuse_used_work_dir(work_dir: Path) -> None:
    """A new run must not write into the work dir of another one (even one interrupted before its first
    checkpoint): its checkpoints would be overwritten and its logs mixed."""
    from gfldet.engine.launch import run_traces

    traces = run_traces(work_dir)
    if not traces:
        return
    options = ("continue it with --resume, choose another --work-dir, or delete it" if "latest.pth" in traces
               else "it has no checkpoint to resume: choose another --work-dir, or delete it")
    raise GfldetError(f"{work_dir} already holds a run ({', '.join(traces)}): {options} (a new run there would "
                      f"overwrite its checkpoints and mix its logs)")


def run(args: argparse.Namespace) -> int:
    from gfldet.config import load_config
    from gfldet.engine.launch import train

    overrides = (list(args.opts) + ([f"train.amp={args.amp}"] if args.amp else [])
                 + ([f"train.compile={args.compile}"] if args.compile else []))
    cfg = load_config(args.config, overrides)
    work_dir = Path(args.work_dir) if args.work_dir else default_work_dir(args.config)
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else work_dir / "latest.pth"
        if not resume.is_file():
            raise GfldetError(f"--resume: no checkpoint at {resume} (train first, or pass the checkpoint path)")
    if resume is not None and args.load_from:
        raise GfldetError("--resume and --load-from exclude each other: --resume restores the whole training state, "
                          "--load-from only initialises weights")
    if resume is None:
        refuse_used_work_dir(work_dir)
    train(cfg, work_dir=work_dir, resume=resume, load_from=args.load_from)
    return 0
