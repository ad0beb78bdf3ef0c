import json
import zipfile

import numpy as np
import pytest
from pycocotools.coco import COCO

from gfldet.engine.evaluator import (METRIC_KEYS, CocoEvaluator, check_results_format, format_ap_table,
                                     predictions_to_coco, write_submission)
from gfldet.errors import GfldetError

CAT_IDS = [3, 7]  # non-contiguous original ids: label 0 -> 3, label 1 -> 7


def _gt() -> dict:
    rng = np.random.default_rng(0)
    images, anns = [], []
    for image_id in (11, 12, 13, 14):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 200, "width": 300})
        for _ in range(3):
            x, y = rng.integers(0, 150, 2)
            w, h = rng.integers(20, 120, 2)  # small, medium and large boxes
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.choice(CAT_IDS)),
                         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    return {"images": images, "annotations": anns, "categories": categories}


def _coco(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    return coco


def _perfect_predictions(data: dict) -> list[dict]:
    by_image = {}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        by_image.setdefault(ann["image_id"], []).append(([x, y, x + w, y + h], CAT_IDS.index(ann["category_id"])))
    return [{"image_id": i, "boxes": np.array([b for b, _ in v]), "scores": np.full(len(v), 0.9),
             "labels": np.array([lbl for _, lbl in v])} for i, v in by_image.items()]


def test_predictions_map_labels_to_original_ids_and_xywh():
    pred = {"image_id": 5, "boxes": np.array([[10.0, 20.0, 50.0, 80.0]]), "scores": np.array([0.5]),
            "labels": np.array([1])}
    assert predictions_to_coco([pred], CAT_IDS) == [
        {"image_id": 5, "category_id": 7, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.5}]
    with pytest.raises(GfldetError, match="label outside"):
        predictions_to_coco([{**pred, "labels": np.array([2])}], CAT_IDS)


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_perfect_detections_give_ap_one(backend):
    data = _gt()
    evaluator = CocoEvaluator(coco_gt=_coco(data), cat_ids=CAT_IDS, class_names=["cat", "dog"], backend=backend)
    metrics, summary = evaluator.evaluate(predictions_to_coco(_perfect_predictions(data), CAT_IDS), [11, 12, 13, 14])
    assert metrics["bbox_mAP"] == pytest.approx(1.0)
    assert metrics["bbox_mAP_50"] == pytest.approx(1.0)
    assert metrics["per_class"] == pytest.approx({"cat": 1.0, "dog": 1.0})
    assert "Average Precision" in summary
    assert "| cat | 1.000 |" in format_ap_table(metrics)


def test_backends_agree_on_imperfect_detections():
    data = _gt()
    preds = _perfect_predictions(data)
    rng = np.random.default_rng(1)
    for pred in preds:  # jitter boxes, shuffle scores, add a false positive
        pred["boxes"] = pred["boxes"] + rng.normal(0, 6, pred["boxes"].shape)
        pred["scores"] = rng.uniform(0.1, 1.0, len(pred["scores"]))
        pred["boxes"] = np.vstack([pred["boxes"], [[0, 0, 40, 40]]])
        pred["scores"] = np.append(pred["scores"], 0.95)
        pred["labels"] = np.append(pred["labels"], 0)
    results = predictions_to_coco(preds, CAT_IDS)
    stats = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        evaluator = CocoEvaluator(coco_gt=_coco(_gt()), cat_ids=CAT_IDS, class_names=["cat", "dog"], backend=backend)
        stats[backend] = evaluator.evaluate(results, [11, 12, 13, 14])[0]
    assert 0.1 < stats["pycocotools"]["bbox_mAP"] < 0.95
    for key in METRIC_KEYS:
        assert stats["faster_coco_eval"][key] == pytest.approx(stats["pycocotools"][key], abs=1e-6), key
    assert stats["faster_coco_eval"]["per_class"] == pytest.approx(stats["pycocotools"]["per_class"], abs=1e-6)


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_no_detections_score_as_cocoeval_scores_any_result_set(backend):
    # One image with a small and a medium cat: no large object, no dog. COCOeval gives -1 where there is no ground
    # truth and 0 elsewhere; a lone dog far from everything scores the same, through the ordinary path.
    data = {**_gt(), "annotations": [
        {"id": 1, "image_id": 11, "category_id": 3, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0},
        {"id": 2, "image_id": 11, "category_id": 3, "bbox": [50.0, 50.0, 60.0, 60.0], "area": 3600.0, "iscrowd": 0}]}
    evaluator = CocoEvaluator(coco_gt=_coco(data), cat_ids=CAT_IDS, class_names=["cat", "dog"], backend=backend)
    metrics, summary = evaluator.evaluate([], [11])
    assert [metrics[key] for key in METRIC_KEYS] == [0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    assert metrics["per_class"] == {"cat": 0.0, "dog": -1.0} and "Average Precision" in summary
    stray_dog = [{"image_id": 11, "category_id": 7, "bbox": [200.0, 150.0, 30.0, 30.0], "score": 0.5}]
    assert evaluator.evaluate(stray_dog, [11])[0] == metrics
    assert "| dog | - |" in format_ap_table(metrics) and "| 0.000 | - |" in format_ap_table(metrics)


def test_unknown_backend_is_rejected():
    with pytest.raises(GfldetError, match="pycocotools"):
        CocoEvaluator(coco_gt=None, cat_ids=CAT_IDS, class_names=["a", "b"], backend="detectron")


def test_testdev_submission_passes_the_format_check(tmp_path):
    image_info = {"images": [{"id": 101, "width": 300, "height": 200, "file_name": "a.jpg"},
                             {"id": 102, "width": 300, "height": 200, "file_name": "b.jpg"}],
                  "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    preds = [{"image_id": 101, "boxes": np.array([[1.0, 2.0, 30.0, 40.0], [5, 5, 6, 9]]),
              "scores": np.array([0.9, 0.3]), "labels": np.array([0, 1])},
             {"image_id": 102, "boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}]
    results = predictions_to_coco(preds, CAT_IDS)
    check_results_format(results, image_info)
    zip_path = write_submission(results, tmp_path, name="gfl_r50")
    assert zip_path.name == "detections_test-dev2017_gfl_r50_results.zip"
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["detections_test-dev2017_gfl_r50_results.json"]
        assert json.loads(archive.read(archive.namelist()[0])) == results
    bad = [dict(results[0], image_id=999), dict(results[1], category_id=1), dict(results[0], bbox=[0, 0, -1, 2])]
    with pytest.raises(GfldetError) as err:
        check_results_format(bad, image_info)
    assert "image_id 999" in str(err.value) and "category_id 1" in str(err.value) and "w, h >= 0" in str(err.value)
