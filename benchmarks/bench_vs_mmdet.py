"""gfldet vs mmdetection 3.3's GFL R-50-FPN: the same model with the same weights on the same inputs, one process.

    bash scripts/install_parity_deps.sh                 # mmdetection 3.3 (pure-PyTorch parts) into .venv
    python benchmarks/bench_vs_mmdet.py [--quick] [--runs 5] [--modes infer train] [--sizes 2x800x1333 8x512x512]
        [--amp off bf16]

mmdetection's GFL is built from its registry as its ``gfl_r50_fpn_1x_coco`` config has it (ResNet-50 with
frozen_stages=1 and norm_eval, FPN P3-P7 from the outputs, GFLHead with 4 GroupNorm convs per tower, reg_max 16,
80 classes, ATSS top-9, QFL / DFL / GIoU) with random weights; gfldet's detector loads the same weights
(``convert_mmdet_state_dict``, strict), so both compute the same function (tests/parity checks that they do).
mmcv-lite has no compiled ops: mmdetection's NMS runs torchvision's C++ kernel through ``tests/mmdet_compat.py``
(mmcv's own NMS is a C++ kernel too).

- ``infer``: batch 1, 800x1333 (padded to 800x1344), post-processing included (score 0.05, 1000 candidates per
  level, NMS IoU 0.6, 100 detections). mmdetection: ``extract_feat`` -> ``bbox_head`` -> ``predict_by_feat``
  (rescale off); gfldet as ``gfldet test`` runs it (``optimize_for_inference``: BatchNorm folded, channels_last)
  and as built (eval mode, NCHW). Scenarios as in bench_infer_vs_torchvision.py: ``init`` (cls bias from
  prior_prob 0.01: few candidates) and ``saturated`` (cls bias 0: 5 x 1000 candidates reach NMS in both).
- ``train``: one step (forward, loss, backward, SGD as in bench_train_vs_torchvision.py) on the same images and
  8 GT boxes per image. mmdetection: ``GFL.loss`` on DetDataSamples; gfldet: its training forward, NHWC
  (``train.channels_last``, default) and NCHW. ``--amp bf16`` runs the forward and loss of both under autocast.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import logging
import sys

import torch

import _common
from gfldet.checkpoint import convert_mmdet_state_dict
from gfldet.engine.amp import autocast
from gfldet.engine.benchmark import inference_stages, run_interleaved, synthetic_batch
from gfldet.models.inference_opt import optimize_for_inference

sys.path.insert(0, str(_common.REPO))
from tests.mmdet_compat import install_mmcv_ext_stub, mmdet_gfl_config, torchvision_nms  # noqa: E402

PAD = 32


def build_pair(*, saturated: bool = False) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(mmdetection's GFL, gfldet's GFL with the same weights); ``saturated``: cls bias 0 in both."""
    from mmengine.config import ConfigDict
    from mmengine.logging import MMLogger
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.ERROR)  # no per-parameter init report
    theirs = MODELS.build(ConfigDict(mmdet_gfl_config(num_classes=_common.NUM_CLASSES, pad_size_divisor=PAD)))
    theirs.init_weights()
    if saturated:
        with torch.no_grad():
            theirs.bbox_head.gfl_cls.bias.zero_()
    ours = _common.build_gfl_r50()
    ours.load_state_dict(convert_mmdet_state_dict({"state_dict": theirs.state_dict(), "meta": {}}), strict=True)
    return theirs, ours


def mmdet_metas(batch) -> list[dict]:
    padded = tuple(batch.images.shape[2:])
    return [dict(img_shape=size, pad_shape=padded, batch_input_shape=padded, scale_factor=(1.0, 1.0))
            for size in batch.image_sizes]


def mmdet_inference_stages(model, batch) -> list:
    """mmdetection's eval forward as the stages of gfldet's ``inference_stages`` (each under inference_mode)."""
    metas = mmdet_metas(batch)

    def postprocess(outputs):
        return model.bbox_head.predict_by_feat(*outputs, batch_img_metas=metas, rescale=False)

    stages = [("backbone+neck", model.extract_feat), ("head", model.bbox_head), ("postprocess", postprocess)]
    return [(name, torch.inference_mode()(fn)) for name, fn in stages]


def mmdet_train_stages(model, batch, *, device: torch.device, amp: str) -> list:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    samples = []
    for meta, boxes, labels in zip(mmdet_metas(batch), batch.gt_boxes, batch.gt_labels):
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        samples.append(sample)
    model.train()
    return _common.step_stages(model, lambda: model.loss(batch.images, samples), device=device, amp=amp)


def run_infer(args) -> list[str]:
    lines = []
    batch = synthetic_batch(batch_size=1, height=args.infer_size[0], width=args.infer_size[1],
                            num_classes=_common.NUM_CLASSES, device=args.device)
    fp32 = lambda: autocast(args.device, "off")  # noqa: E731  (a fresh context per call)
    for scenario in ("init", "saturated"):
        theirs, ours = build_pair(saturated=scenario == "saturated")
        optimised = optimize_for_inference(copy.deepcopy(ours))
        ours.eval()
        theirs.eval()
        pipelines = {
            "gfldet (optimize_for_inference: BN folded, channels_last)":
                (inference_stages(optimised, batch, autocast=fp32), batch.images),
            "gfldet (as built: NCHW, BatchNorm)": (inference_stages(ours, batch, autocast=fp32),
                                                   batch.images),
            "mmdetection GFL": (mmdet_inference_stages(theirs, batch), batch.images),
        }
        times = run_interleaved(pipelines, runs=args.runs, warmup=args.warmup, device=args.device)
        heading = (f"**Inference, batch 1, {args.infer_size[0]}x{args.infer_size[1]}, scenario {scenario}**; load "
                   f"average after: {_common.load_average()}")
        lines += _common.timing_block(heading, times, peer="mmdetection GFL", batch_size=1, device=args.device)
    return lines


def run_train(args, batch_size: int, height: int, width: int, amp: str) -> list[str]:
    batch = synthetic_batch(batch_size=batch_size, height=height, width=width, num_classes=_common.NUM_CLASSES,
                            device=args.device)
    theirs, ours = build_pair()
    pipelines, _ = _common.gfl_train_contenders(lambda: copy.deepcopy(ours), batch, device=args.device, amp=amp,
                                                also_winograd=args.also_winograd)
    pipelines["mmdetection GFL"] = (mmdet_train_stages(theirs, batch, device=args.device, amp=amp), None)
    times = run_interleaved(pipelines, runs=args.runs, warmup=args.warmup, device=args.device)
    precision = "fp32" if amp == "off" else f"{amp} autocast (both)"
    heading = (f"**Training step, batch {batch_size}, {height}x{width}** (padded {batch.images.shape[2]}x"
               f"{batch.images.shape[3]}), {precision}; load average after: {_common.load_average()}")
    return _common.timing_block(heading, times, peer="mmdetection GFL", batch_size=batch_size, device=args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_common_arguments(parser, default_runs=5, default_warmup=3)
    parser.add_argument("--modes", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    _common.add_step_arguments(parser, default_amp=["off"])
    args = parser.parse_args()
    _common.setup(args)
    if args.device.type != "cpu":
        parser.error("mmcv-lite has no GPU kernels: this comparison runs on the CPU")
    install_mmcv_ext_stub()
    try:
        importlib.import_module("mmdet.models")
    except ImportError as error:
        sys.exit(f"mmdetection is not installed ({error}): bash scripts/install_parity_deps.sh")
    importlib.import_module("mmcv.ops.nms").nms = torchvision_nms
    args.infer_size = (128, 160) if args.quick else (800, 1333)
    torch.manual_seed(0)
    body = [f"Same weights in both; {args.runs} interleaved rounds after {args.warmup} warm-up, {args.threads} "
            f"thread(s). Ratio = median over rounds of gfldet time / mmdetection time in the same round.", ""]
    if "infer" in args.modes:
        body += run_infer(args)
    if "train" in args.modes:
        for batch_size, height, width in _common.step_sizes(args):
            for amp in args.amp:
                body += run_train(args, batch_size, height, width, amp)
    _common.write_report(args, name="vs_mmdet", title="gfldet vs mmdetection GFL R-50-FPN", body=body)


if __name__ == "__main__":
    main()
