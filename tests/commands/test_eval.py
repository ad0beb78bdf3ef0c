"""``gfldet eval ANN RESULTS``: any results json scored with gfldet's evaluator; bad results are clear errors."""
import json
import re

import pytest

from gfldet.cli import main
from tests.data.data_helpers import write_coco

GT = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400},
      {"image_id": 1, "category_id": 3, "bbox": [40, 5, 15, 30], "area": 450},
      {"image_id": 2, "category_id": 1, "bbox": [5, 20, 30, 25], "area": 750}]


@pytest.fixture
def ann_file(tmp_path):
    (tmp_path / "gt").mkdir()
    return write_coco(tmp_path / "gt", [(1, 64, 64), (2, 64, 64), (3, 64, 64)], GT, make_files=False)


def _results(tmp_path, results, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(results))
    return str(path)


def _perfect():
    return [{"image_id": g["image_id"], "category_id": g["category_id"], "bbox": g["bbox"], "score": 0.9}
            for g in GT]


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_perfect_results_score_one_and_metrics_are_written(ann_file, tmp_path, capsys, backend):
    pytest.importorskip(backend)
    results = [{**r, "segmentation": [], "id": k} for k, r in enumerate(_perfect())]  # other tools' extra keys
    out = tmp_path / "out"
    assert main(["eval", str(ann_file), _results(tmp_path, results), "--out", str(out), "--backend", backend,
                 "--analyze"]) == 0
    printed = capsys.readouterr().out
    assert "3 detections on 2 of the 3 images" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and metrics["per_class"] == pytest.approx({"a": 1.0, "b": 1.0})
    assert (out / "error_analysis.png").is_file() and json.loads((out / "error_analysis.json").read_text())


def test_a_missed_box_and_a_false_positive_lower_the_ap(ann_file, tmp_path, capsys):
    results = _perfect()[:2] + [{"image_id": 3, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.95}]
    assert main(["eval", str(ann_file), _results(tmp_path, results), "--backend", "pycocotools"]) == 0
    printed = capsys.readouterr().out
    # class a: one of its 2 boxes found, ranked below a false positive -> AP 0.5 * 0.5 = 0.25 (101-point interpolation
    # gives 0.252); class b: 1.0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.626" in printed


@pytest.mark.parametrize("results, message", [
    ([{"image_id": 9, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}], "image_id 9 is not an image of"),
    ([{"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.5}], "category_id 2 is not a category"),
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5], "score": 0.5}], r"bbox \[0, 0, 5\] is not \[x, y, w, h\]"),
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": "high"}], "score 'high' is not a finite"),
    ([{"image_id": [1], "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}], r"image_id \[1\] is not an image"),
    ([{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}], "expected bbox, category_id, image_id, score"),
    ({"annotations": []}, "expected a json list of COCO results, found a dict"),
])
def test_bad_results_are_clear_errors(ann_file, tmp_path, capsys, results, message):
    assert main(["eval", str(ann_file), _results(tmp_path, results)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_unreadable_inputs_and_analyze_without_out_are_clear_errors(ann_file, tmp_path, capsys):
    (tmp_path / "broken.json").write_text('[{"image_id": 1,\n  "score": }]')
    assert main(["eval", str(ann_file), str(tmp_path / "broken.json")]) == 1
    assert "broken.json:2:12: not valid JSON" in capsys.readouterr().err
    assert main(["eval", str(ann_file), str(tmp_path / "missing.json")]) == 1
    assert "results file not found" in capsys.readouterr().err
    assert main(["eval", str(ann_file), _results(tmp_path, _perfect()), "--analyze"]) == 1
    assert "give --out DIR" in capsys.readouterr().err
    assert main(["eval", str(ann_file), _results(tmp_path, _perfect()), "--out", str(ann_file)]) == 1
    assert "is a file: give a folder" in capsys.readouterr().err
    assert main(["eval", str(ann_file), _results(tmp_path, _perfect()), "--out", str(ann_file / "sub")]) == 1
    assert "cannot create the folder" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere.json"), _results(tmp_path, _perfect())]) == 1
    err = capsys.readouterr().err
    assert "annotation file not found" in err and "data.<split>" not in err
