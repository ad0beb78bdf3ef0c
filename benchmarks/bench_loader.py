"""Loader throughput: gfldet's training pipeline vs torchvision ``CocoDetection`` + ``transforms.v2`` on BCCD.

Both pipelines do the same work per image: decode the JPEG, keep-ratio resize into 1333x800 (bilinear),
horizontal flip with p=0.5, normalise with the reference mean/std, and pad batches of 2 to a multiple of 32,
with 2 DataLoader worker processes. Images per second are measured after a warm-up, over whole passes.

    python benchmarks/bench_loader.py [--bccd ../shared/datasets/BCCD] [--images 400] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from gfldet.config import load_config
from gfldet.data import build_dataloader
from gfldet.data.voc import convert_voc

REPO = Path(__file__).resolve().parents[1]
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def _pad_collate(batch):
    """Zero-pad normalised images bottom/right to a multiple of 32 (the same padding as gfldet's collate)."""
    images = [image for image, _ in batch]
    h = math.ceil(max(i.shape[1] for i in images) / 32) * 32
    w = math.ceil(max(i.shape[2] for i in images) / 32) * 32
    out = torch.zeros(len(images), 3, h, w)
    for k, image in enumerate(images):
        out[k, :, : image.shape[1], : image.shape[2]] = image
    return out, [target for _, target in batch]


def torchvision_loader(ann_file: str, img_dir: str, *, workers: int, batch_size: int) -> DataLoader:
    transforms = v2.Compose([
        v2.ToImage(),
        v2.Resize(size=800, max_size=1333, antialias=False),   # short side 800, long side <= 1333, bilinear
        v2.RandomHorizontalFlip(p=0.5),
        v2.ToDtype(torch.float32, scale=False),
        v2.Normalize(mean=MEAN, std=STD),
    ])
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints while indexing
        dataset = torchvision.datasets.CocoDetection(img_dir, ann_file, transforms=transforms)
    dataset = torchvision.datasets.wrap_dataset_for_transforms_v2(dataset, target_keys=("boxes", "labels"))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=_pad_collate,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))


def gfldet_loader(ann_file: str, img_dir: str, *, workers: int, batch_size: int) -> DataLoader:
    cfg = load_config(REPO / "configs/_base_/datasets/bccd.yaml").data
    cfg.train.ann_file, cfg.train.img_dir = ann_file, img_dir
    cfg.train.filter_empty = False
    cfg.num_workers, cfg.batch_size = workers, batch_size
    return build_dataloader(cfg, "train", seed=0)


def images_per_second(loader: DataLoader, num_images: int, warmup_batches: int = 5) -> float:
    """Iterate passes over ``loader`` until ``num_images`` images after the warm-up batches are seen."""
    seen, start, epoch = -1, 0.0, 0
    while True:
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        for number, batch in enumerate(loader):
            if epoch == 0 and number == warmup_batches:
                seen, start = 0, time.perf_counter()
            elif seen >= 0:
                seen += len(batch[0]) if isinstance(batch, tuple) else len(batch)
                if seen >= num_images:
                    return seen / (time.perf_counter() - start)
        epoch += 1


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bccd", default=os.environ.get("GFLDET_BCCD", str(REPO.parent / "shared/datasets/BCCD")))
    parser.add_argument("--images", type=int, default=400, help="images timed per pipeline and round")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    parser.add_argument("--quick", action="store_true", help="16 images, no workers, 1 round: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.images, args.workers, args.rounds = 16, 0, 1
    torch.set_num_threads(1)
    logging.getLogger("gfldet.data").setLevel(logging.ERROR)   # BCCD's two degenerate boxes are expected
    bccd = Path(args.bccd)
    with tempfile.TemporaryDirectory() as tmp:
        convert_voc(ann_dir=bccd / "Annotations", img_dir=bccd / "JPEGImages", out_dir=tmp,
                    splits={"train": bccd / "ImageSets/Main/train.txt"})
        ann_file, img_dir = str(Path(tmp) / "train.json"), str(bccd / "JPEGImages")
        loaders = {
            "gfldet (cv2 + albumentations)": lambda: gfldet_loader(ann_file, img_dir, workers=args.workers,
                                                                   batch_size=args.batch_size),
            "torchvision CocoDetection + v2": lambda: torchvision_loader(ann_file, img_dir, workers=args.workers,
                                                                         batch_size=args.batch_size),
        }
        best = {name: 0.0 for name in loaders}
        for _ in range(args.rounds):
            for name, make in loaders.items():
                best[name] = max(best[name], images_per_second(make(), args.images))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}; workers {args.workers}, batch {args.batch_size}, "
          f"{args.images} images x best of {args.rounds}")
    for name, value in best.items():
        print(f"{name:34s} {value:7.1f} images/s")


if __name__ == "__main__":
    main()
