"""Regenerate the README pictures (docs/images/{box_distributions,training_curves,error_analysis,pr_curves}.png).

    python tools/make_readme_images.py CONFIG WORK_DIR [--out docs/images] [--image-index 0] [--rank 0]

The README pictures come from: work_dirs/quickstart/config.yaml work_dirs/quickstart --image-index 9 --rank 2
(two overlapping squares: sharp left/top edges, a flat right edge and a two-peaked bottom edge); pr_curves.png
from the quickstart run of 2026-12-02 (bbox_mAP 0.761; there image 9's third detection is another one).

WORK_DIR holds the run's log.jsonl and latest.pth (e.g. work_dirs/quickstart). The error analysis runs the
checkpoint on the config's val split; the distribution figure shows the best detection of one val image.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gfldet.analysis import (detections_with_distributions, error_analysis, format_error_analysis,
                             plot_error_analysis, plot_pr_curves, plot_training_curves, save_box_distributions)
from gfldet.config import load_config
from gfldet.data import build_dataloader
from gfldet.engine.evaluator import predictions_to_coco
from gfldet.engine.inference import run_inference
from gfldet.engine.testing import load_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("work_dir")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--image-index", type=int, default=0, help="val image of the distribution figure")
    parser.add_argument("--rank", type=int, default=0, help="which detection of that image (0 = best)")
    parser.add_argument("--opts", nargs="+", default=[])
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, args.opts)
    model, _ = load_detector(cfg, Path(args.work_dir) / "latest.pth", torch.device("cpu"))
    plot_training_curves([args.work_dir], out / "training_curves.png")

    loader = build_dataloader(cfg.data, "val")
    dataset = loader.dataset
    results = predictions_to_coco(run_inference(model, loader, device=torch.device("cpu")), dataset.cat_ids)
    analysis = error_analysis(dataset.coco, results, image_ids=dataset.image_ids)
    print(format_error_analysis(analysis))
    plot_error_analysis(analysis, out / "error_analysis.png")
    plot_pr_curves(analysis, out / "pr_curves.png")

    sample = dataset[args.image_index]
    batch = loader.collate_fn([sample])
    dets = detections_with_distributions(model, batch.images, batch.image_sizes, batch.scale_factors)[0]
    record = next(r for r in dataset.records if r.image_id == sample.image_id)
    paths = save_box_distributions(dataset.load_image(record), dets, out, stem="box_distributions",
                                   top_k=args.rank + 1, class_names=dataset.class_names)
    paths[-1].rename(out / "box_distributions.png")
    for path in paths[:-1]:
        path.unlink()
    for name in ("box_distributions", "training_curves", "error_analysis", "pr_curves"):
        path = out / f"{name}.png"
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
