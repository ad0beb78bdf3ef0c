"""Training step (forward, loss, backward, SGD step): gfldet GFL R-50-FPN vs torchvision FCOS R-50-FPN.

    python benchmarks/bench_train_vs_torchvision.py [--quick] [--runs 5] [--warmup 3] [--threads 2]
        [--sizes 2x800x1333 8x512x512] [--amp off bf16] [--cpu-allocator reuse|system]
    python benchmarks/bench_train_vs_torchvision.py --device cuda --sizes 2x800x1333 --amp off fp16 bf16

One process, identical random images and GT boxes (8 per image, labels in 0..79), random weights, SGD (lr 1e-3,
momentum 0.9, weight decay 1e-4) over the trainable parameters of each model. Frozen parts as far as torchvision
allows: FCOS is built as ``fcos_resnet50_fpn`` builds it with a pretrained backbone (FrozenBatchNorm2d,
trainable_backbone_layers=3: stem and layer1 frozen) = gfldet's frozen_stages=1 with norm_eval. Differences that
remain: gfldet's BatchNorms in layer2-4 keep trainable affine parameters (mmdetection's norm_eval semantics;
FrozenBatchNorm2d freezes them); the GFL head predicts 4 x 17 distribution logits per prior where FCOS predicts
4 distances + 1 centerness; FCOS's tower convs have biases and its FPN has a ReLU before P7; the losses differ by
design (ATSS + QFL + DFL + GIoU vs centre sampling + focal + GIoU + centerness BCE); FCOS's transform runs a
resize by exactly 1 and a mean-0/std-1 normalisation pass over the batch. ``--amp bf16|fp16`` runs the forward and
loss of every contender under autocast (gfldet's ``train.amp``), fp16 with a GradScaler for every contender. On a
GPU (``--device cuda``) FCOS is also timed with channels_last weights, and each contender's memory is measured.
"""
from __future__ import annotations

import argparse
import copy

import torch

import _common
from gfldet.engine.benchmark import run_interleaved, synthetic_batch


def fcos_pipeline(model, batch, *, device: torch.device, amp: str):
    model.train()
    images = [im[:, :h, :w] for im, (h, w) in zip(batch.images, batch.image_sizes)]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(batch.gt_boxes, batch.gt_labels)]
    return _common.step_stages(model, lambda: model(images, targets), device=device, amp=amp)


def run_size(args, batch_size: int, height: int, width: int, amp: str) -> list[str]:
    device = args.device
    batch = synthetic_batch(batch_size=batch_size, height=height, width=width, num_classes=_common.NUM_CLASSES,
                            device=device)
    pipelines, models = _common.gfl_train_contenders(lambda: _common.build_gfl_r50().to(device), batch,
                                                     device=device, amp=amp, also_winograd=args.also_winograd)
    fcos = _common.build_fcos_r50(height=height, width=width).to(device)
    peers = {"torchvision FCOS": fcos}
    if device.type == "cuda":
        peers["torchvision FCOS (channels_last)"] = copy.deepcopy(fcos).to(memory_format=torch.channels_last)
    pipelines.update({name: (fcos_pipeline(model, batch, device=device, amp=amp), None)
                      for name, model in peers.items()})
    models.update(peers)
    times = run_interleaved(pipelines, runs=args.runs, warmup=args.warmup, device=device)
    precision = "fp32" if amp == "off" else f"{amp} autocast (every contender)"
    heading = (f"**Batch {batch_size}, {height}x{width}** (padded {batch.images.shape[2]}x{batch.images.shape[3]}), "
               f"{precision}; load average after: {_common.load_average()}")
    lines = _common.timing_block(heading, times, peer="torchvision FCOS", batch_size=batch_size, device=device)
    if device.type == "cuda":
        lines += [*_common.cuda_memory_lines(pipelines, models, device=device), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 3 warm-up steps: the heap grows over the first steps (page faults) before a training run's steady state
    _common.add_common_arguments(parser, default_runs=5, default_warmup=3)
    _common.add_step_arguments(parser, default_amp=["off", "bf16"])
    args = parser.parse_args()
    _common.setup(args)
    body = [f"One training step, random weights, {args.runs} interleaved rounds after {args.warmup} warm-up, "
            f"{args.threads} thread(s). Ratio = median over rounds of gfldet time / FCOS time in the same round.", ""]
    for batch_size, height, width in _common.step_sizes(args):
        for amp in args.amp:
            body += run_size(args, batch_size, height, width, amp)
    _common.write_report(args, name="train_vs_torchvision", title="Training step vs torchvision FCOS", body=body)


if __name__ == "__main__":
    main()
