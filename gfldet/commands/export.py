"""``gfldet export CONFIG CKPT [--format onnx|torchscript] [--dynamic|--batch N] [--opset N] [--with-postprocess]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from gfldet.commands import add_opts_argument

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the YAML config the checkpoint was trained with")
    parser.add_argument("checkpoint", help="checkpoint .pth (gfldet, or converted with `gfldet convert`)")
    parser.add_argument("--format", choices=tuple(SUFFIXES), default="onnx", help="default: onnx")
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="output file (default: the checkpoint's path with .onnx / .pt)")
    parser.add_argument("--outputs", choices=("raw", "decoded"), default="raw",
                        help="raw: per-level cls and distribution logits (default); decoded: scores [N,P,C] and "
                             "boxes [N,P,4] xyxy px for every prior")
    parser.add_argument("--with-postprocess", action="store_true",
                        help="include threshold, top-k, decoding and class-aware NMS: one image in, boxes [K,4], "
                             "scores [K], labels [K] out")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic height and width (and batch, except with --with-postprocess)")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="batch size of a static ONNX export, the only one it accepts (default 1; "
                             "--with-postprocess: 1)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17, at least 11)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="example input size, multiples of 32 (default: the test Resize scale, landscape)")
    add_opts_argument(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from gfldet.config import load_config
    from gfldet.engine.testing import load_detector
    from gfldet.errors import GfldetError
    from gfldet.export import DEFAULT_OPSET, default_input_size, export_onnx, export_torchscript

    if args.with_postprocess and args.outputs != "raw":
        raise GfldetError("--with-postprocess already decodes (it outputs boxes, scores, labels): "
                          "drop --outputs, or drop --with-postprocess to get the decoded outputs of every prior")
    if args.dynamic and args.batch is not None:
        raise GfldetError("--batch fixes the batch of a static export: drop it with --dynamic (any batch)")
    batch = 1 if args.batch is None else args.batch
    cfg = load_config(args.config, args.opts)
    model, meta = load_detector(cfg, args.checkpoint, torch.device("cpu"))
    view = "detections" if args.with_postprocess else args.outputs
    input_size = tuple(args.input_size) if args.input_size else default_input_size(cfg)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(SUFFIXES[args.format])
    if args.format == "onnx":
        export_onnx(model, out, view=view, input_size=input_size, batch=batch, dynamic=args.dynamic,
                    opset=args.opset or DEFAULT_OPSET, metadata={"class_names": meta.get("class_names")})
    else:
        for flag in ("opset", "batch"):
            if getattr(args, flag) is not None:
                print(f"gfldet export: --{flag} applies to ONNX only; ignored for torchscript")
        export_torchscript(model, out, view=view, input_size=input_size)
    static = f"{batch}x3x{input_size[0]}x{input_size[1]}"
    shape = "dynamic" if args.dynamic or args.format == "torchscript" else static
    print(f"exported {view} outputs ({args.format}, input {shape}) -> {out}")
    return 0
