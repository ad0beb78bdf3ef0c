"""Error analysis: AP per class / size and the false-positive types on a hand-made case."""
from __future__ import annotations

import contextlib
import io

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from gfldet.analysis import error_analysis, format_error_analysis, plot_error_analysis, plot_pr_curves


@pytest.fixture
def coco_gt() -> COCO:
    """Image 1: A (cat 1, 30x30 small), B (cat 2, 30x30 small); image 2: C (cat 1, 50x50 medium) + a crowd region."""
    anns = [(1, 1, [10, 10, 30, 30], 0), (1, 2, [60, 60, 30, 30], 0), (2, 1, [0, 0, 50, 50], 0),
            (2, 1, [60, 0, 40, 40], 1)]
    dataset = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
               "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "platelet"}],
               "annotations": [{"id": i + 1, "image_id": img, "category_id": cat, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": crowd}
                               for i, (img, cat, box, crowd) in enumerate(anns)]}
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_each_false_positive_type_is_recognised(coco_gt):
    detections = [
        det(1, 1, [10, 10, 30, 30], 0.9),   # TP on A
        det(1, 1, [11, 11, 30, 30], 0.8),   # duplicate of A
        det(1, 1, [60, 60, 30, 30], 0.7),   # on B with the wrong class: confusion
        det(2, 1, [0, 0, 50, 20], 0.6),     # IoU 0.4 with C: localisation (scores above the TP below)
        det(2, 1, [0, 0, 50, 50], 0.55),    # TP on C
        det(2, 2, [5, 5, 40, 40], 0.5),     # IoU 0.64 with C of another class: confusion
        det(1, 2, [0, 70, 10, 10], 0.5),    # nothing there: background
        det(2, 1, [65, 5, 20, 20], 0.5),    # inside the crowd region of its class: ignored
        det(1, 1, [80, 0, 10, 10], 0.2),    # below score_thr: not classified
    ]
    result = error_analysis(coco_gt, detections, score_thr=0.3)
    assert result["false_positives"] == {"localisation": 1, "confusion": 2, "duplicate": 1, "background": 1}
    assert result["fp_shares"]["confusion"] == pytest.approx(0.4)
    assert (result["true_positives"], result["missed"], result["num_gt"]) == (2, 1, 3)  # B missed


def test_perfect_detections_give_ap_one_and_none_for_absent_sizes(coco_gt, tmp_path):
    detections = [det(1, 1, [10, 10, 30, 30], 0.9), det(1, 2, [60, 60, 30, 30], 0.9), det(2, 1, [0, 0, 50, 50], 0.9)]
    result = error_analysis(coco_gt, detections)
    assert result["ap"]["all"] == pytest.approx(1.0) and result["ap50"]["all"] == pytest.approx(1.0)
    assert result["per_class"]["cell"]["small"] == pytest.approx(1.0)
    assert result["per_class"]["cell"]["medium"] == pytest.approx(1.0)
    assert result["per_class"]["platelet"]["medium"] is None and result["ap"]["large"] is None
    assert sum(result["false_positives"].values()) == 0 and result["missed"] == 0
    table = format_error_analysis(result)
    assert "| platelet | 1.000 | 1.000 | - | - |" in table
    out = plot_error_analysis(result, tmp_path / "errors.png")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (1100, 450)
    curves = result["pr_curves"]
    assert len(curves["recall"]) == 101 and curves["recall"][:2] == [0.0, 0.01]
    assert curves["iou50"]["cell"] == [1.0] * 101 and curves["iou75"]["platelet"] == [1.0] * 101
    with Image.open(plot_pr_curves(result, tmp_path / "pr.png")) as png:
        assert png.format == "PNG" and png.size == (1100, 450)


def test_pr_curve_follows_the_ranking(coco_gt):
    # cell: a false positive ranked first, then A found; C (image 2) never found -> recall stops at 0.5 with
    # precision 0.5 there (interpolated: 0.5 from recall 0 to 0.5), 0 beyond
    result = error_analysis(coco_gt, [det(1, 1, [70, 0, 20, 20], 0.95), det(1, 1, [10, 10, 30, 30], 0.9)],
                            image_ids=[1, 2])
    cell = result["pr_curves"]["iou50"]["cell"]
    assert cell[:51] == [0.5] * 51 and cell[51:] == [0.0] * 50
    assert result["pr_curves"]["iou50"]["platelet"] == [0.0] * 101  # GT, no detection: precision 0


def test_pr_curves_at_iou_50_and_75_differ_for_a_loose_box(coco_gt):
    # B (platelet, 30x30 at 60,60) found with IoU 0.6: a hit at IoU 0.5, a miss at 0.75
    result = error_analysis(coco_gt, [det(1, 2, [60, 60, 30, 18], 0.9)])
    assert result["pr_curves"]["iou50"]["platelet"] == [1.0] * 101
    assert result["pr_curves"]["iou75"]["platelet"] == [0.0] * 101


def test_restricted_to_some_images(coco_gt):
    result = error_analysis(coco_gt, [det(1, 1, [10, 10, 30, 30], 0.9), det(2, 1, [0, 0, 50, 50], 0.9)],
                            image_ids=[2])
    assert (result["true_positives"], result["missed"], result["num_gt"]) == (1, 0, 1)
    assert result["ap"]["all"] == pytest.approx(1.0) and result["per_class"]["platelet"]["all"] is None


def test_no_detections_at_all(coco_gt):
    result = error_analysis(coco_gt, [])
    assert result["ap"]["all"] == 0.0 and result["missed"] == 3
    assert result["ap"]["large"] is None and result["per_class"]["platelet"] == {  # as COCOeval: no GT, no AP
        "all": 0.0, "small": 0.0, "medium": None, "large": None}
    assert result["fp_shares"] == {"localisation": 0.0, "confusion": 0.0, "duplicate": 0.0, "background": 0.0}


def test_on_the_synthetic_dataset_with_a_detector(tmp_path):
    """End to end: data layer -> tiny detector -> COCO results -> analysis agrees with the evaluator's AP."""
    from gfldet.config import load_config
    from gfldet.data import build_dataloader
    from gfldet.data.synthetic import SynthSpec, generate_synthetic
    from gfldet.engine.evaluator import CocoEvaluator, predictions_to_coco
    from gfldet.engine.inference import run_inference
    from tests.export.tiny_models import tiny_detector, write_tiny_config

    generate_synthetic(SynthSpec(num_train=1, num_val=4, height=128, width=160, seed=2), tmp_path / "synth")
    cfg = load_config(write_tiny_config(tmp_path / "tiny.yaml", tmp_path / "synth"))
    loader = build_dataloader(cfg.data, "val")
    dataset = loader.dataset
    predictions = run_inference(tiny_detector(seed=3), loader, device=torch.device("cpu"))
    results = predictions_to_coco(predictions, dataset.cat_ids)
    analysis = error_analysis(dataset.coco, results, image_ids=dataset.image_ids, score_thr=0.0)
    metrics, _ = CocoEvaluator(coco_gt=dataset.coco, cat_ids=dataset.cat_ids, class_names=dataset.class_names,
                               backend="pycocotools").evaluate(results, dataset.image_ids)
    assert analysis["ap"]["all"] == pytest.approx(metrics["bbox_mAP"], abs=1e-9)
    assert list(analysis["per_class"]) == dataset.class_names
    fps = sum(analysis["false_positives"].values())
    assert analysis["true_positives"] + analysis["missed"] == analysis["num_gt"] == len(dataset.coco.getAnnIds())
    assert fps + analysis["true_positives"] == len(results) > 0  # no crowd regions: every detection is classified


def test_a_second_detection_on_a_crowd_region_of_its_class_is_ignored_not_a_duplicate():
    # COCOeval matches a detection that finds no free GT to a crowd region before anything else, and ignores it.
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "cell"}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600,
                                     "iscrowd": 0},
                                    {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500,
                                     "iscrowd": 1}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    result = error_analysis(coco, [det(1, 1, [0, 0, 40, 40], 0.9), det(1, 1, [1, 1, 40, 40], 0.8)])
    assert sum(result["false_positives"].values()) == 0 and result["true_positives"] == 1
