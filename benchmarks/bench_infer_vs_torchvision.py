"""Inference incl. post-processing: gfldet GFL R-50-FPN vs torchvision FCOS R-50-FPN, one process, same inputs.

    python benchmarks/bench_infer_vs_torchvision.py [--quick] [--runs 5] [--threads 1]
    python benchmarks/bench_infer_vs_torchvision.py --device cuda --amp off fp16 --runs 50 --warmup 10

Both models get the same random "normalised" 800x1333 image (batch 1) and random weights. Settings matched:
score threshold 0.05, at most 1000 candidates per level, class-aware NMS at IoU 0.6, 100 detections. gfldet gets
the image zero-padded to 800x1344 with image_size (800, 1333); FCOS gets the 800x1333 tensor and pads it to
800x1344 itself; its transform has mean 0 / std 1 and min/max size 800/1333, i.e. a resize by exactly 1 (one
cheap bilinear pass and one normalisation pass over the input remain in FCOS's time).

Random weights make post-processing unrepresentative: FCOS's initial score sqrt(0.01 * 0.5) = 0.07 passes the 0.05
threshold everywhere (1000 candidates per level), GFL's initial 0.01 passes nowhere. So two scenarios are timed:
``init`` (as initialised) and ``saturated`` (GFL's cls prior_prob set to 0.5, so both models send the full 5 x 1000
candidates to NMS). The candidate counts are printed with the times.

``--amp fp16|bf16`` runs every stage of every contender under autocast. On a GPU (``--device cuda``) FCOS is
also timed with channels_last weights (its convolutions then run NHWC, as gfldet's), and each contender's memory
is measured.
"""
from __future__ import annotations

import argparse
import contextlib
import copy

import torch

import _common
from gfldet.commands.benchmark import parse_size
from gfldet.engine.amp import AMP_MODES, autocast
from gfldet.engine.benchmark import inference_stages, run_interleaved, run_stages, synthetic_batch
from gfldet.models.heads.dense_head import flatten_levels
from gfldet.models.heads.postprocess import select_candidates
from gfldet.models.inference_opt import optimize_for_inference

SCENARIOS = {"init": (), "saturated": ("model.head.prior_prob=0.5",)}


def fcos_stages(model, image_sizes, amp_context=contextlib.nullcontext):
    """FCOS's eval forward split into backbone+neck (incl. its transform) / head / postprocess stages, each under
    ``torch.inference_mode`` and a fresh ``amp_context()``."""
    def backbone(images):
        image_list, _ = model.transform([im[:, :h, :w] for im, (h, w) in zip(images, image_sizes)])
        return image_list, list(model.backbone(image_list.tensors).values())

    def head(state):
        image_list, feats = state
        return image_list, feats, model.head(feats)

    def postprocess(state):
        image_list, feats, outputs = state
        anchors = model.anchor_generator(image_list, feats)
        counts = [f.shape[2] * f.shape[3] for f in feats]
        split = {k: list(v.split(counts, dim=1)) for k, v in outputs.items()}
        detections = model.postprocess_detections(split, [list(a.split(counts)) for a in anchors],
                                                  image_list.image_sizes)
        return model.transform.postprocess(detections, image_list.image_sizes, list(image_sizes))

    def inference(fn):
        def wrapped(value):
            with torch.inference_mode(), amp_context():
                return fn(value)
        return wrapped

    return [(name, inference(fn)) for name, fn in
            (("backbone+neck", backbone), ("head", head), ("postprocess", postprocess))]


@torch.inference_mode()
def candidate_counts(gfl, fcos, images, image_sizes) -> tuple[int, int]:
    """(prior, class) pairs each model sends to NMS for the first image."""
    cls_scores, _ = gfl.raw_outputs(images)
    cfg = gfl.head.test_cfg
    num_per_level = gfl.head.priors_for(cls_scores).num_per_level
    gfl_count = select_candidates(flatten_levels(cls_scores)[:1].sigmoid(), num_per_level,
                                  score_thr=cfg.score_thr, nms_pre=cfg.nms_pre)[0].numel()
    _, feats = fcos_stages(fcos, image_sizes)[0][1](images)
    outputs = fcos.head(feats)
    fcos_count = 0
    for cls, ctr in zip(outputs["cls_logits"][0].split([f.shape[2] * f.shape[3] for f in feats]),
                        outputs["bbox_ctrness"][0].split([f.shape[2] * f.shape[3] for f in feats])):
        passed = int(((cls.sigmoid() * ctr.sigmoid()).sqrt() > fcos.score_thresh).sum())
        fcos_count += min(passed, fcos.topk_candidates)
    return gfl_count, fcos_count


def check_fcos_split(fcos, images, image_sizes) -> None:
    """The staged FCOS must give what ``fcos(images)`` gives: exactly on the CPU; on a GPU up to 1e-3 (cuDNN may
    pick another convolution algorithm per call), where a difference is only reported (the timings still hold)."""
    value = run_stages(fcos_stages(fcos, image_sizes), images)
    with torch.inference_mode():
        direct = fcos([im[:, :h, :w] for im, (h, w) in zip(images, image_sizes)])
    exact = images.device.type == "cpu"
    same = all(a[k].shape == b[k].shape and (torch.equal(a[k], b[k]) if exact else
                                             torch.allclose(a[k].float(), b[k].float(), atol=1e-3))
               for a, b in zip(value, direct) for k in ("boxes", "scores", "labels"))
    if not same and exact:
        raise AssertionError("FCOS stage split differs from fcos(images)")
    if not same:
        print("warning: the staged FCOS differs from fcos(images) by more than 1e-3 on this GPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_common_arguments(parser, default_runs=5)
    parser.add_argument("--size", default="800x1333", help="HxW (default 800x1333)")
    parser.add_argument("--amp", nargs="+", choices=list(AMP_MODES), default=["off"],
                        help="precision modes, each run for every contender (default: off = fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="also time optimize_for_inference(compile=True) (inductor with frozen weights; "
                             "compiling takes minutes)")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args()
    _common.setup(args)
    height, width = (256, 320) if args.quick else parse_size(args.size)
    batch = synthetic_batch(batch_size=1, height=height, width=width, num_classes=_common.NUM_CLASSES,
                            device=args.device)
    body = [f"Inference incl. post-processing, batch 1, {height}x{width} (padded "
            f"{batch.images.shape[2]}x{batch.images.shape[3]}), random weights, {args.runs} interleaved rounds "
            f"after {args.warmup} warm-up, {args.threads} CPU thread(s). Ratio = median over rounds of the "
            "contender's time / FCOS's time in the same round.", ""]
    for scenario in args.scenarios:
        for amp in args.amp:
            body += run_scenario(args, batch, scenario, amp)
    _common.write_report(args, name="infer_vs_torchvision", title="Inference vs torchvision FCOS", body=body)


def run_scenario(args, batch, scenario: str, amp: str) -> list[str]:
    """Time every contender in one scenario and precision; markdown lines."""
    device = args.device
    plain = _common.build_gfl_r50(SCENARIOS[scenario]).to(device).eval()
    optimised = optimize_for_inference(copy.deepcopy(plain), channels_last=True)
    fcos = _common.build_fcos_r50(height=batch.image_sizes[0][0], width=batch.image_sizes[0][1]).to(device).eval()
    check_fcos_split(fcos, batch.images, batch.image_sizes)
    gfl_candidates, fcos_candidates = candidate_counts(plain, fcos, batch.images, batch.image_sizes)
    amp_context = lambda: autocast(device, amp)  # noqa: E731  (a fresh context per call)
    models = {"gfldet (optimize_for_inference)": optimised, "gfldet (plain)": plain, "torchvision FCOS": fcos}
    if device.type == "cuda":
        models["torchvision FCOS (channels_last)"] = copy.deepcopy(fcos).to(memory_format=torch.channels_last)
    if args.compile:
        compiled = optimize_for_inference(copy.deepcopy(plain), channels_last=True, compile=True)
        with torch.inference_mode(), amp_context():  # compile outside the timed rounds
            compiled.predict(batch.images, batch.image_sizes, batch.scale_factors)
        models["gfldet (optimize_for_inference + compile)"] = compiled
    pipelines = {name: ((fcos_stages(model, batch.image_sizes, amp_context) if name.startswith("torchvision")
                         else inference_stages(model, batch, autocast=amp_context)), batch.images)
                 for name, model in models.items()}
    times = run_interleaved(pipelines, runs=args.runs, warmup=args.warmup, device=device)
    precision = "fp32" if amp == "off" else f"{amp} autocast (every contender)"
    heading = (f"**Scenario `{scenario}`, {precision}**: candidates sent to NMS: gfldet {gfl_candidates}, "
               f"FCOS {fcos_candidates}; detections kept: gfldet "
               f"{len(times['gfldet (plain)'].last_output[0]['boxes'])}, FCOS "
               f"{len(times['torchvision FCOS'].last_output[0]['boxes'])}")
    lines = _common.timing_block(heading, times, peer="torchvision FCOS", batch_size=1, device=device)
    if device.type == "cuda":
        lines += [*_common.cuda_memory_lines(pipelines, models, device=device), ""]
    return lines


if __name__ == "__main__":
    main()
