"""Evaluate a checkpoint on a split (``gfldet test``) and run it on image files (``gfldet infer``)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from gfldet.config import Config, check_keys
from gfldet.data.coco import IMAGE_SUFFIXES, Sample, read_rgb
from gfldet.engine.checkpointer import checkpoint_weights, load_checkpoint
from gfldet.engine.distributed import distributed_scope, get_world_size, is_main_process
from gfldet.engine.evaluator import (RESULT_KEYS, CocoEvaluator, check_results_format, format_ap_table,
                                     predictions_to_coco, write_submission)
from gfldet.engine.inference import evaluated_image_ids, run_inference
from gfldet.engine.launch import EVALUATION_KEYS, check_sections, setup_device
from gfldet.errors import GfldetError

__all__ = ["load_detector", "evaluate_checkpoint", "evaluate_results_file", "image_paths", "infer_images"]


def load_detector(cfg: Config, checkpoint: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Build ``cfg.model`` and load the checkpoint's weights (its EMA weights when it has them).

    The backbone's ``pretrained`` setting is ignored: every weight comes from the checkpoint.
    Returns (model on ``device`` prepared by ``optimize_for_inference`` -- eval mode, BatchNorm folded into the
    convs, channels_last; for inference only --, checkpoint meta). ``model.num_classes`` comes from the checkpoint's
    config when the config leaves it null.
    """
    from gfldet.models import build_detector
    from gfldet.models.inference_opt import optimize_for_inference

    state = load_checkpoint(checkpoint)
    meta = state.get("meta", {}) if isinstance(state, dict) else {}
    if cfg.model.get("num_classes") is None and "class_names" in meta:
        cfg.model.num_classes = len(meta["class_names"])
    model_cfg = copy.deepcopy(cfg.model)
    if "pretrained" in model_cfg.backbone:
        # the checkpoint holds every weight: load (or download) no ImageNet ones
        model_cfg.backbone["pretrained"] = False
    model = build_detector(model_cfg)
    try:
        model.load_state_dict(checkpoint_weights(state))
    except RuntimeError as err:
        raise GfldetError(f"checkpoint {checkpoint} does not fit model of the config: {err}") from None
    return optimize_for_inference(model.to(device), channels_last=True), meta


@distributed_scope()
def evaluate_checkpoint(cfg: Config, checkpoint: str | Path, *, split: str, work_dir: str | Path,
                        format_only: bool, name: str, analyze: bool = False) -> dict | None:
    """COCO-evaluate ``checkpoint`` on ``split`` (sharded over ranks under torchrun).

    Writes ``results.json`` (COCO results) and, unless ``format_only`` or the split has no annotations,
    ``metrics.json``; prints the AP table. ``format_only`` also writes the evaluation-server zip
    ``detections_test-dev2017_<name>_results.{json,zip}``. ``analyze`` adds AP per class and size and the types of
    the false positives (``error_analysis.{json,png}``). Returns the metrics (None when format-only).
    """
    from gfldet.data import build_dataloader

    check_sections(cfg)
    check_keys(cfg.evaluation, EVALUATION_KEYS, where="evaluation")
    device = setup_device(cfg.train)
    loader = build_dataloader(cfg.data, split, distributed=get_world_size() > 1)
    dataset = loader.dataset
    model, meta = load_detector(cfg, checkpoint, device)
    _check_categories(meta, dataset, checkpoint)
    predictions = run_inference(model, loader, device=device, amp=cfg.train.amp, desc=f"test {split}")
    if not is_main_process():
        return None
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    results = predictions_to_coco(predictions, dataset.cat_ids)
    (work_dir / "results.json").write_text(json.dumps(results))
    print(f"[gfldet] {len(results)} detections on {len(predictions)} images -> {work_dir / 'results.json'}")
    has_annotations = bool(dataset.coco.dataset.get("annotations"))
    if format_only or not has_annotations:
        if not format_only:
            print(f"[gfldet] {dataset.ann_file} has no annotations: writing the submission files only")
        check_results_format(results, dataset.coco.dataset)  # what the evaluation server checks
        zip_path = write_submission(results, work_dir, name=name)
        print(f"[gfldet] submission: {zip_path}")
        return None
    return _score(dataset.coco, dataset.cat_ids, dataset.class_names, results,
                  evaluated_image_ids(predictions, dataset.image_ids), backend=cfg.evaluation.backend,
                  work_dir=work_dir, analyze=analyze)


def evaluate_results_file(ann_file: str | Path, results_file: str | Path, *, backend: str = "auto",
                          work_dir: str | Path | None = None, analyze: bool = False) -> dict:
    """COCO-evaluate a results json (``[{image_id, category_id, bbox [x, y, w, h], score}]``, as ``gfldet test``,
    mmdetection's ``--format-only``, torchvision's or ultralytics' ``save_json`` write it; other keys are ignored;
    image and category ids must be those of the annotation file: nothing is mapped) against the annotation file,
    on every image of it (COCO's protocol: an image without results counts its boxes as missed). Prints the AP
    table; with ``work_dir`` writes ``metrics.json`` there (and, with ``analyze``, the error analysis). Returns the
    metrics."""
    from gfldet.data.coco import coco_index

    if analyze and work_dir is None:
        raise GfldetError("--analyze writes error_analysis.{json,png} and pr_curves.png: give --out DIR")
    if work_dir is not None and Path(work_dir).exists() and not Path(work_dir).is_dir():
        raise GfldetError(f"--out {work_dir} is a file: give a folder for metrics.json")  # before the evaluation
    coco_gt = coco_index(ann_file, hint="")
    categories = sorted(coco_gt.dataset["categories"], key=lambda category: category["id"])  # as the datasets
    results = _load_results_json(results_file)
    check_results_format(results, coco_gt.dataset, extra_keys=True, source=str(ann_file))
    results = [{key: res[key] for key in RESULT_KEYS} for res in results]
    image_ids = sorted(coco_gt.getImgIds())
    with_results = len({res["image_id"] for res in results})
    print(f"[gfldet] {len(results)} detections on {with_results} of the {len(image_ids)} images of {ann_file}")
    if work_dir is not None:
        try:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise GfldetError(f"--out {work_dir}: cannot create the folder ({err})") from None
    return _score(coco_gt, [c["id"] for c in categories], [c["name"] for c in categories], results, image_ids,
                  backend=backend, work_dir=work_dir, analyze=analyze)


def _load_results_json(path: str | Path) -> list:
    """The list of a COCO results file; GfldetError naming the file (and line) when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise GfldetError(f"results file not found: {path}")
    try:
        results = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        raise GfldetError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    if not isinstance(results, list):
        raise GfldetError(f"{path}: expected a json list of COCO results, found a {type(results).__name__}")
    return results


def _score(coco_gt, cat_ids, class_names, results: list[dict], image_ids: list[int], *, backend: str,
           work_dir: Path | str | None, analyze: bool) -> dict:
    """COCO AP of ``results`` on ``image_ids``: printed, written to ``work_dir/metrics.json`` (and the error
    analysis with ``analyze``) when ``work_dir`` is given; returns the metrics."""
    evaluator = CocoEvaluator(coco_gt=coco_gt, cat_ids=cat_ids, class_names=class_names, backend=backend)
    metrics, summary = evaluator.evaluate(results, image_ids)
    print(summary + format_ap_table(metrics))
    if work_dir is not None:
        (Path(work_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(f"[gfldet] metrics -> {Path(work_dir) / 'metrics.json'}")
    if analyze:
        _write_error_analysis(coco_gt, results, image_ids, Path(work_dir))
    return metrics


def _check_categories(meta: dict, dataset, checkpoint) -> None:
    """Labels are indices into the training categories: evaluating them against other categories (another set or
    order) would give wrong category ids and a wrong AP without any error."""
    trained = meta.get("cat_ids")
    if trained is not None and list(trained) != list(dataset.cat_ids):
        raise GfldetError(f"{checkpoint} was trained on category ids {list(trained)[:10]}... "
                          f"({len(trained)}), but {dataset.ann_file} lists {list(dataset.cat_ids)[:10]}... "
                          f"({len(dataset.cat_ids)}): evaluate on annotations with the training categories, "
                          f"in the same order")


def _write_error_analysis(coco_gt, results: list[dict], image_ids: list[int], work_dir: Path) -> None:
    from gfldet.analysis import error_analysis, format_error_analysis, plot_error_analysis, plot_pr_curves

    analysis = error_analysis(coco_gt, results, image_ids=image_ids)
    print(format_error_analysis(analysis))
    # null where a class or size has no GT; allow_nan=False: never the NaN that JSON parsers reject
    (work_dir / "error_analysis.json").write_text(json.dumps(analysis, indent=2, allow_nan=False))
    plot_error_analysis(analysis, work_dir / "error_analysis.png")
    plot_pr_curves(analysis, work_dir / "pr_curves.png")
    print(f"[gfldet] error analysis -> {work_dir / 'error_analysis.json'}, {work_dir / 'error_analysis.png'}, "
          f"{work_dir / 'pr_curves.png'}")


def image_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``paths`` (files, or folders whose image files are taken in name order)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise GfldetError(f"no such image file or directory: {path}")
    if not found:
        raise GfldetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(map(str, paths))}")
    return found


@torch.no_grad()
def infer_images(cfg: Config, checkpoint: str | Path, paths: Sequence[str | Path], *, out_dir: str | Path,
                 score_thr: float, show_dist: int = 0) -> Path:
    """Detect objects in image files; write ``out_dir/<stem>.jpg`` with boxes drawn (``<stem>_<index>.jpg`` when
    an earlier input had the same stem) and ``out_dir/detections.json``.

    Images go through the config's test transforms (``data.test.transforms``, normalisation, padding). The json
    lists per file: ``drawn`` (the output image's name), ``boxes`` [[x1, y1, x2, y2]] original px, ``scores``,
    ``labels`` (0..C-1) and ``names``.
    ``show_dist`` > 0 also saves, for the best ``show_dist`` detections of each image, a figure of the four learned
    box-side distributions into ``out_dir/distributions/``.
    """
    from gfldet.data.batching import collate
    from gfldet.data.transforms import build_transform
    from gfldet.visualization import draw_detections

    device = setup_device(cfg.train, distributed=False)
    model, meta = load_detector(cfg, checkpoint, device)
    if show_dist and not hasattr(model.head, "reg_max"):
        raise GfldetError(f"--show-dist draws GFL's learned box distributions; {type(model.head).__name__} "
                          f"(model.head.type {cfg.model.head.type}) predicts none: leave --show-dist out")
    class_names = meta.get("class_names") or [str(i) for i in range(cfg.model.num_classes)]
    transform = build_transform(cfg.data.test.transforms, where="data.test.transforms")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    empty = np.zeros((0, 4), np.float32)
    used_stems: set[str] = set()
    for index, path in enumerate(tqdm(image_paths(paths), desc="infer", unit="img", dynamic_ncols=True, leave=False)):
        stem = path.stem if path.stem not in used_stems else f"{path.stem}_{index}"  # a.png and a.jpg, or 2 dirs
        used_stems.add(stem)
        rgb = read_rgb(path)
        res = transform(rgb, empty, np.zeros(0, np.int64), empty)
        sample = Sample(image=res.image, boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64),
                        ignore_boxes=torch.zeros(0, 4), image_id=index, file_name=str(path),
                        image_size=tuple(res.image.shape[1:]), original_size=rgb.shape[:2],
                        scale_factor=res.scale_factor)
        batch = collate([sample], size_divisor=int(cfg.data.size_divisor), mean=cfg.data.mean,
                        std=cfg.data.std).to(device)
        if show_dist:
            from gfldet.analysis import detections_with_distributions, save_box_distributions

            dets = detections_with_distributions(model, batch.images, batch.image_sizes, batch.scale_factors)[0]
            save_box_distributions(rgb, dets, out_dir / "distributions", stem=stem, top_k=show_dist,
                                   min_score=score_thr, class_names=class_names)
            pred = {"boxes": dets.boxes, "scores": dets.scores, "labels": dets.labels}
        else:
            pred = model.predict(batch.images, batch.image_sizes, batch.scale_factors)[0]
        keep = pred["scores"] >= score_thr
        boxes, scores, labels = (pred[k][keep].float().cpu().numpy() for k in ("boxes", "scores", "labels"))
        labels = labels.astype(np.int64)
        drawn = draw_detections(rgb, boxes, labels, scores, class_names=class_names)
        cv2.imwrite(str(out_dir / f"{stem}.jpg"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        records.append({"file": str(path), "drawn": f"{stem}.jpg", "boxes": boxes.astype(np.float64).round(2).tolist(),
                        "scores": scores.astype(np.float64).round(4).tolist(),
                        "labels": labels.tolist(), "names": [class_names[i] for i in labels]})
    json_path = out_dir / "detections.json"
    json_path.write_text(json.dumps(records, indent=1))
    return json_path
