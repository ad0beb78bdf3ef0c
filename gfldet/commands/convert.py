"""``gfldet convert mmdet SRC.pth DST.pth``: rename an mmdetection GFL checkpoint's weights to gfldet's."""
from __future__ import annotations

import argparse

from gfldet.checkpoint import convert_mmdet_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    mmdet = sources.add_parser("mmdet", help="an mmdetection 2.x/3.x GFL checkpoint (ResNet/ResNeXt(-DCN)-FPN)",
                               description="Convert an mmdetection GFL checkpoint; the result loads into "
                                           "build_detector(cfg.model) with strict=True.")
    mmdet.add_argument("src", help="mmdetection .pth file (a full checkpoint or a bare state dict)")
    mmdet.add_argument("dst", help="output .pth: {'model': state_dict, 'meta': {...}}")


def run(args: argparse.Namespace) -> int:
    state = convert_mmdet_checkpoint(args.src, args.dst)
    print(f"converted {len(state)} tensors from {args.src} -> {args.dst}")
    return 0
