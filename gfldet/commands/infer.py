"""``gfldet infer CONFIG CKPT PATHS... --out DIR``: draw a checkpoint's detections on image files.

Undecodable inputs follow ``data.on_bad_image``: ``error`` names the first one before any work, ``skip`` leaves
them out and lists them at the end.
"""
from __future__ import annotations

import argparse

from gfldet.commands import add_opts_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config the checkpoint was trained with")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("paths", nargs="+", help="image files or directories of images")
    parser.add_argument("--out", required=True, help="output directory for the drawn images and detections.json")
    parser.add_argument("--score-thr", type=float, default=0.3, help="minimum score of a drawn box (default 0.3)")
    parser.add_argument("--show-dist", type=int, default=0, metavar="K",
                        help="also save the learned box-side distributions of the K best detections of each image "
                             "(one PNG per detection in OUT/distributions/)")
    add_opts_argument(parser)


def run(args: argparse.Namespace) -> int:
    from gfldet.config import load_config
    from gfldet.engine.inference import readable_images
    from gfldet.engine.testing import image_paths, infer_images

    cfg = load_config(args.config, args.opts)
    paths, skipped = readable_images(image_paths(args.paths), on_bad_image=cfg.data.get("on_bad_image", "error"))
    json_path = infer_images(cfg, args.checkpoint, paths, out_dir=args.out, score_thr=args.score_thr,
                             show_dist=args.show_dist)
    print(f"[gfldet] detections drawn into {json_path.parent}, listed in {json_path}")
    if skipped:
        print(f"[gfldet] {skipped.total()} unreadable image(s) skipped (data.on_bad_image=skip):\n  "
              + "\n  ".join(skipped.lines()))
    return 0
