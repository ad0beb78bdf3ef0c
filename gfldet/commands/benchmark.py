"""``gfldet benchmark CONFIG``: time inference (full predict) or a training step on synthetic inputs.

Random weights unless ``--ckpt`` is given (nothing is downloaded: ``model.backbone.pretrained`` is switched off).
``infer`` times backbone+neck / head / post-processing of ``model.predict``, after ``optimize_for_inference``
(BatchNorm folding, channels_last, Winograd convolutions; ``--no-optimize`` times the plain model); ``train`` times
forward / loss / backward / optimizer of one step with random GT boxes, using the config's ``optimizer`` section
and the convolution kernels ``gfldet train`` would pick (``train.channels_last`` / ``train.winograd``: auto).
``--profile`` and ``--find-syncs`` then say where the time goes (see ``gfldet.engine.benchmark``).
"""
from __future__ import annotations

import argparse
import json
import re

from gfldet.commands import add_opts_argument
from gfldet.errors import GfldetError

MODES = ("infer", "train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (its `model` section, and `optimizer` for --mode train)")
    parser.add_argument("--ckpt", help="checkpoint to load (default: random weights)")
    parser.add_argument("--mode", choices=MODES, default="infer")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto = cuda when a GPU is visible")
    parser.add_argument("--amp", choices=("off", "fp16", "bf16"), default="off")
    parser.add_argument("--batch", type=int, default=1, help="images per batch (default 1)")
    parser.add_argument("--size", default="800x1333", help="HxW of each image before padding to a multiple of "
                                                          "the config's data.size_divisor (default 800x1333)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs; the median is reported (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cpu-allocator", choices=("reuse", "system"), default="reuse",
                        help="CPU: keep freed memory for reuse (default, as gfldet train) or glibc's default")
    parser.add_argument("--gts", type=int, default=8, help="random GT boxes per image for --mode train")
    parser.add_argument("--no-optimize", action="store_true", help="infer: skip optimize_for_inference")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC weights and activations (default: as gfldet test/infer (on) and gfldet train "
                             "(train.channels_last: auto, on for AVX-512 CPUs only) do)")
    parser.add_argument("--winograd", action=argparse.BooleanOptionalAction, default=None,
                        help="stride-1 3x3 convs on Winograd kernels, the neck's and head's (infer) or all, weight "
                             "gradients included (train) (default: as gfldet test/infer/train (train.winograd: "
                             "auto) do: on for AVX2 CPUs only)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile backbone, neck and head (infer) or forward and loss (train, as "
                             "train.compile); the first runs compile, so raise --warmup")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--profile", nargs="?", const="", metavar="TRACE.json",
                        help="after timing, profile 3 more runs: operators by self time (and how busy the GPU "
                             "was); with a path, also write a Chrome trace there")
    parser.add_argument("--find-syncs", action="store_true",
                        help="cuda: run once more and list the source lines where the host waited for the GPU")
    add_opts_argument(parser)


def parse_size(text: str) -> tuple[int, int]:
    """``'800x1333'`` -> (800, 1333)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 32:
        raise GfldetError(f"--size must be HxW with both sides >= 32, e.g. 800x1333; got {text!r}")
    return int(match[1]), int(match[2])


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("batch", "runs"):
        if getattr(args, name) < 1:
            raise GfldetError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.gts < 0:
        raise GfldetError(f"--warmup and --gts must be >= 0, got {args.warmup} and {args.gts}")


def run(args: argparse.Namespace) -> int:
    import torch

    from gfldet.config import load_config
    from gfldet.engine import benchmark as bench
    from gfldet.engine.host_allocator import configure_cpu_allocator
    from gfldet.engine.launch import resolve_device
    from gfldet.models import build_detector

    height, width = parse_size(args.size)
    _check_counts(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.opts)
    device = torch.device(resolve_device(args.device, setting="--device"))
    if args.find_syncs and device.type != "cuda":
        raise GfldetError("--find-syncs needs a GPU (--device cuda, or auto with a GPU visible): on the CPU the "
                          "host never waits for a device")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        configure_cpu_allocator(args.cpu_allocator)
    num_classes = cfg.model.get("num_classes")
    if not isinstance(num_classes, int):
        raise GfldetError(f"{cfg.where('model')}: model.num_classes is {num_classes!r}; benchmark needs a number "
                          "(e.g. --opts model.num_classes=80)")
    if "pretrained" in cfg.model.backbone:
        cfg.model.backbone["pretrained"] = False  # random or checkpoint weights: never download
    model = build_detector(cfg.model)
    if args.ckpt:
        from gfldet.engine.checkpointer import load_model_weights

        load_model_weights(model, args.ckpt)
    model.to(device)
    size_divisor = cfg.data.get("size_divisor", 32) if "data" in cfg else 32
    batch = bench.synthetic_batch(batch_size=args.batch, height=height, width=width, num_classes=num_classes,
                                  gts_per_image=args.gts, size_divisor=size_divisor, device=device)
    size = _model_size(model, batch)  # before optimize_for_inference replaces its convolutions
    stages, optimisations = _stages(model, batch, cfg, args, device)
    pipeline = {"gfldet": (stages, batch.images)}
    if device.type == "cuda":
        # one more run after the timed ones: cudnn.benchmark's trials in the first runs allocate workspaces of up
        # to tens of GiB, which a training run's steady state never holds
        times = bench.run_interleaved(pipeline, runs=args.runs, warmup=args.warmup, device=device)["gfldet"]
        with bench.PeakMemory(device) as memory:
            bench.run_stages(stages, batch.images)
    else:  # the process's peak RSS grows in the first runs (heap, allocator caches): measure them all
        with bench.PeakMemory(device) as memory:
            times = bench.run_interleaved(pipeline, runs=args.runs, warmup=args.warmup, device=device)["gfldet"]
    _report(args, device, (height, width), batch, optimisations, times, memory, size)
    _diagnose(args, device, stages, batch)
    return 0


def _model_size(model, batch) -> dict:
    """Parameters, and the multiply-accumulates of backbone + neck + head on one (padded) image of ``batch``
    (counted in eval mode: a training-mode forward would update BatchNorm's running statistics)."""
    from gfldet.engine import benchmark as bench

    was_training = model.training
    model.eval()
    try:
        macs = bench.count_macs(lambda: model.raw_outputs(batch.images[:1]))
    finally:
        model.train(was_training)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "macs_per_image": macs}


def _stages(model, batch, cfg, args, device):
    """The timed stages and a description of the optimisations applied."""
    import torch

    from gfldet.engine import benchmark as bench
    from gfldet.engine.amp import autocast, make_grad_scaler
    from gfldet.engine.conv_kernels import prepare_for_training, use_channels_last, use_winograd

    amp_context = lambda: autocast(device, args.amp)  # noqa: E731  (a fresh context per call)
    if args.channels_last is None:
        args.channels_last = args.mode == "infer" or use_channels_last("auto", device)
    if args.mode == "infer":
        from gfldet.models.inference_opt import optimize_for_inference
        from gfldet.models.winograd_conv import WinogradConv2d

        if args.no_optimize:
            model.eval()
            optimisations = "none (--no-optimize)"
        else:
            optimize_for_inference(model, channels_last=args.channels_last, winograd=args.winograd,
                                   compile=args.compile)
            winograd = any(isinstance(m, WinogradConv2d) for m in model.modules())
            optimisations = (f"optimize_for_inference: fold_bn=on channels_last={'on' if args.channels_last else 'off'}"
                             f" winograd={'on' if winograd else 'off'} compile={'on' if args.compile else 'off'}")
        return bench.inference_stages(model, batch, autocast=amp_context), optimisations
    from gfldet.engine.optim import build_optimizer

    model.train()
    winograd = use_winograd("auto" if args.winograd is None else args.winograd, device)
    prepare_for_training(model, channels_last=args.channels_last, winograd=winograd)
    if args.compile:  # forward and loss, as train.compile; the loss's data-dependent steps become graph breaks
        model.raw_outputs = torch.compile(model.raw_outputs)
        model.head.loss = torch.compile(model.head.loss)
    if "optimizer" in cfg:
        optimizer = build_optimizer(model, cfg.optimizer, total_batch_size=args.batch)
    else:
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    stages = bench.training_stages(model, optimizer, batch, autocast=amp_context,
                                   scaler=make_grad_scaler(device, args.amp))
    optimisations = (f"channels_last={'on' if args.channels_last else 'off'} winograd={'on' if winograd else 'off'} "
                     f"compile(forward, loss)={'on' if args.compile else 'off'}; "
                     f"optimizer {type(optimizer).__name__}")
    return stages, optimisations


def _diagnose(args, device, stages, batch) -> None:
    """--profile and --find-syncs, after the timed runs."""
    from gfldet.engine import benchmark as bench

    if args.profile is not None:
        trace = args.profile or None
        print(f"profile of 3 runs ({'GPU' if device.type == 'cuda' else 'CPU'} self time):")
        print("\n".join(bench.profile_runs(stages, batch.images, device=device, trace_path=trace)))
        if trace:
            print(f"Chrome trace: {trace}")
    if args.find_syncs:
        syncs = bench.find_host_syncs(stages, batch.images, device=device)
        print(f"host-GPU synchronisations in one run: {sum(syncs.values())}")
        for where, count in syncs.most_common():
            print(f"{count:>6} x {where}")


def _report(args, device, size, batch, optimisations, times, memory, model_size) -> None:
    from gfldet.engine import benchmark as bench

    height, width = size
    padded = tuple(batch.images.shape[-2:])
    print(f"gfldet benchmark: mode={args.mode} config={args.config} weights={args.ckpt or 'random'}")
    for line in bench.environment_lines(device):
        print(line)
    allocator = f" cpu_allocator={args.cpu_allocator}" if device.type == "cpu" else ""
    print(f"device={device}{allocator} amp={args.amp} batch={args.batch} size={height}x{width} "
          f"(padded {padded[0]}x{padded[1]}) runs={args.runs} warmup={args.warmup}")
    print(f"model: {model_size['parameters'] / 1e6:.2f} M parameters ({model_size['trainable_parameters'] / 1e6:.2f} "
          f"M trainable), {model_size['macs_per_image'] / 1e9:.2f} GMACs per {padded[0]}x{padded[1]} image (backbone, "
          f"neck and head: convolutions and matrix products; the 'FLOPs' of mmdetection's get_flops)")
    print(f"optimisations: {optimisations}")
    for line in bench.stage_table(times, batch_size=args.batch):
        print(line)
    if args.mode == "infer":
        detections = sum(len(d["boxes"]) for d in times.last_output) / args.batch
        print(f"detections per image (last run): {detections:.1f}")
    print(f"peak memory: {memory.peak_bytes / 2**20:.1f} MiB [{memory.method}]")
    if args.json:
        figures = {"mode": args.mode, "device": str(device), "amp": args.amp, "batch": args.batch,
                   "size": [height, width], "runs": args.runs, "optimisations": optimisations,
                   "cpu_allocator": args.cpu_allocator if device.type == "cpu" else None,
                   "ms_per_image": {name: 1000 * times.median(name) / args.batch for name in times.names},
                   "total_ms_per_image": 1000 * times.median_total() / args.batch,
                   "images_per_s": args.batch / times.median_total(), "peak_memory_bytes": memory.peak_bytes,
                   **model_size,
                   "memory_method": memory.method}
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)

