"""How far gradient accumulation is from one large batch: GFL R-50-FPN's gradient on BCCD training images.

One batch of ``images x accumulate`` images against ``accumulate`` batches of ``images`` (each loss divided by
``accumulate``, as ``train.accumulate`` does), same weights (random: nothing is downloaded; BatchNorm frozen as in
the recipe, so only the loss normalisers differ: each batch divides by its own positives). Prints, per batch, the
cosine similarity of the two gradients, their relative difference and norm ratio, then the medians. The BCCD
annotations are converted with gfldet's own VOC converter into a temporary folder.

    python benchmarks/accumulation_vs_batch.py [--bccd ../shared/datasets/BCCD] [--images 1] [--accumulate 4]
        [--batches 6] [--size 640 480] [--threads 2] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from gfldet.config import load_config
from gfldet.data import build_dataloader
from gfldet.data.voc import convert_voc
from gfldet.engine.benchmark import environment_lines
from gfldet.models import build_detector

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bccd", type=Path, default=REPO.parent / "shared" / "datasets" / "BCCD")
    parser.add_argument("--images", type=int, default=1, help="images per accumulated batch")
    parser.add_argument("--accumulate", type=int, default=4, help="batches per optimiser step")
    parser.add_argument("--batches", type=int, default=6, help="large batches compared")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"), help="Resize scale")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 comparison of 2 x 1 image at 160x120: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.images, args.accumulate, args.batches, args.size = 1, 2, 1, (160, 120)
    return args


def flat_gradient(model: torch.nn.Module, batch, parts: int) -> torch.Tensor:
    """The model's gradient (all trainable parameters, flattened) with ``batch`` cut into ``parts`` batches, each
    loss divided by ``parts``. Every BCCD image has the same size, so a part's padding is the whole batch's."""
    model.zero_grad(set_to_none=True)
    step = len(batch.images) // parts
    for start in range(0, len(batch.images), step):
        part = slice(start, start + step)
        losses = model(batch.images[part], batch.image_sizes[part], batch.gt_boxes[part], batch.gt_labels[part])
        (sum(losses.values()) / parts).backward()
    # float64: float32 sums over 32M elements put the cosine above 1
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).double()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bccd_coco_") as work:
        convert_voc(ann_dir=args.bccd / "Annotations", img_dir=args.bccd / "JPEGImages", out_dir=work,
                    splits={"train": args.bccd / "ImageSets" / "Main" / "train.txt"})
        compare_gradients(args, Path(work) / "train.json")


def compare_gradients(args: argparse.Namespace, ann_file: Path) -> None:
    width, height = args.size
    cfg = load_config(REPO / "configs/gfl/gfl_r50_fpn_1x_coco.yaml", [
        "model.backbone.pretrained=false", "model.num_classes=3", f"data.train.ann_file={ann_file}",
        f"data.train.img_dir={args.bccd / 'JPEGImages'}", f"data.batch_size={args.images * args.accumulate}",
        "data.num_workers=0", f"data.train.transforms=[{{type: Resize, scale: [{width}, {height}]}}]"])
    model = build_detector(cfg.model).train()
    loader = build_dataloader(cfg.data, "train", distributed=False, seed=0)
    print("\n".join(environment_lines(torch.device("cpu"))))
    print(f"one batch of {args.images * args.accumulate} image(s) vs {args.accumulate} accumulated batch(es) of "
          f"{args.images}, BCCD train at {width}x{height}, GFL R-50-FPN with random weights")
    rows = []
    full_batches = (batch for batch in loader if len(batch.images) == args.images * args.accumulate)
    for number, batch in zip(range(args.batches), full_batches):  # not the epoch's smaller last batch
        whole, accumulated = flat_gradient(model, batch, 1), flat_gradient(model, batch, args.accumulate)
        rows.append((torch.nn.functional.cosine_similarity(whole, accumulated, dim=0).item(),
                     ((accumulated - whole).norm() / whole.norm()).item(), (accumulated.norm() / whole.norm()).item()))
        print(f"batch {number}: GTs per image {[len(b) for b in batch.gt_boxes]}: cosine {rows[-1][0]:.4f}, "
              f"|accumulated - whole| / |whole| {rows[-1][1]:.4f}, |accumulated| / |whole| {rows[-1][2]:.4f}",
              flush=True)
    cosine, difference, norm = (statistics.median(column) for column in zip(*rows))
    print(f"median over {len(rows)} batch(es): cosine {cosine:.4f}, relative difference {difference:.4f}, "
          f"norm ratio {norm:.4f}")


if __name__ == "__main__":
    main()
