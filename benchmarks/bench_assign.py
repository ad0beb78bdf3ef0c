"""Benchmark: batched ATSS assignment vs a per-image loop of the same code (CPU, or a GPU with --device cuda).

A batch of N images of H x W (padded to a multiple of 32), GFL priors (strides 8..128, anchor side 8 x stride,
centres at (x * stride, y * stride)) and G random GTs per image. Prints the median wall and CPU time of each
path and their ratios, and checks that both give the same assignment. On a GPU every timed call ends with a
synchronisation (CPU time then says little: the host spins while it waits).

    python benchmarks/bench_assign.py [--images 16] [--gts 30] [--size 800 1333] [--runs 7] [--threads 1] [--no-grid]
        [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from gfldet.assigners import ATSSAssigner, assign_per_image, pad_gt_boxes
from gfldet.engine.benchmark import synchronize
from gfldet.engine.launch import resolve_device
from gfldet.models.priors import PriorGenerator

STRIDES = (8, 16, 32, 64, 128)
PAD_DIVISOR = 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--gts", type=int, default=30, help="GT boxes per image")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=7, help="timed runs per path (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--no-grid", dest="grid", action="store_false",
                        help="exhaustive nearest-prior search (do not pass level_grids)")
    parser.add_argument("--quick", action="store_true", help="2 images of 128x160, 3 GTs, 1 run: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.images, args.gts, args.size, args.runs = 2, 3, (128, 160), 1
    return args


def random_boxes(generator: torch.Generator, num: int, height: int, width: int) -> torch.Tensor:
    """xyxy boxes with log-uniform sides from 8 px to half the image, clipped to the image."""
    centre = torch.rand(num, 2, generator=generator) * torch.tensor([width, height])
    side = torch.exp(torch.empty(num, 2).uniform_(math.log(8), math.log(min(height, width) / 2), generator=generator))
    boxes = torch.cat([centre - side / 2, centre + side / 2], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


def time_ms(fn, runs: int, device: torch.device) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``fn`` in ms over ``runs`` calls (after a warm-up call).
    With one thread, CPU time is the fairer number on a shared machine: it leaves out time spent descheduled."""
    fn()
    wall, cpu = [], []
    for _ in range(runs):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        cpu.append((time.process_time() - cpu_start) * 1000)
        wall.append((time.perf_counter() - wall_start) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device, setting="--device"))
    height, width = args.size
    pad_h, pad_w = (math.ceil(v / PAD_DIVISOR) * PAD_DIVISOR for v in (height, width))
    generator = PriorGenerator(strides=STRIDES, octave_base_scale=8.0)
    priors = generator([(math.ceil(pad_h / s), math.ceil(pad_w / s)) for s in STRIDES], device=device)
    prior_valid = generator.valid_flags(priors, [(height, width)] * args.images, pad_size_divisor=PAD_DIVISOR)
    rng = torch.Generator().manual_seed(args.seed)
    gt_list = [random_boxes(rng, args.gts, height, width).to(device) for _ in range(args.images)]
    labels = [torch.zeros(args.gts, dtype=torch.long, device=device)] * args.images
    gt_boxes, _, gt_valid = pad_gt_boxes(gt_list, labels)
    assigner = ATSSAssigner(topk=9)
    anchors, per_level = priors.anchors_px, list(priors.num_per_level)
    grids = [(math.ceil(pad_h / s), math.ceil(pad_w / s), s) for s in STRIDES] if args.grid else None

    def batched():
        return assigner.assign(anchors, per_level, gt_boxes, gt_valid, prior_valid, level_grids=grids)

    def per_image():
        return assign_per_image(assigner, anchors, per_level, gt_list, prior_valid, level_grids=grids)

    same = torch.equal(batched().gt_index, per_image().gt_index)
    batched_ms, per_image_ms = time_ms(batched, args.runs, device), time_ms(per_image, args.runs, device)
    print(f"ATSS assignment: {args.images} images {height}x{width}, {anchors.shape[0]} priors, {args.gts} GTs/image, "
          f"{'windowed' if args.grid else 'exhaustive'} search, {args.threads} thread(s), {args.runs} runs, "
          f"torch {torch.__version__}, device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    print("              wall (median)  CPU (median)")
    print(f"  batched   : {batched_ms[0]:9.1f} ms  {batched_ms[1]:9.1f} ms")
    print(f"  per-image : {per_image_ms[0]:9.1f} ms  {per_image_ms[1]:9.1f} ms")
    print(f"  speed-up  : {per_image_ms[0] / batched_ms[0]:9.2f} x   {per_image_ms[1] / batched_ms[1]:9.2f} x"
          f"   (identical assignment: {same})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
