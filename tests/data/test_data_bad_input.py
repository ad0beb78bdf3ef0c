"""Every kind of bad input gives a clear error (file, id, expectation) or a counted, policy-driven skip/drop."""

import json

import numpy as np
import pytest

from tests.data.data_helpers import REPO, data_cfg, write_coco, write_image
from gfldet.cli import main
from gfldet.config import ConfigError
from gfldet.data import DataError, build_dataset
from gfldet.data.check import check_split

GOOD = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}


def _build(tmp_path, annotations, images=((1, 64, 64),), **policy):
    ann = write_coco(tmp_path, list(images), annotations)
    return build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)}, **policy), "train")


@pytest.mark.parametrize("bad, kind", [
    ({"image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]}, "unknown image id"),
    ({"image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]}, "unknown category id"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5]}, "degenerate box"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, -3]}, "degenerate box"),
    ({"image_id": 1, "category_id": 1, "bbox": [100, 100, 5, 5]}, "box outside image"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, float("nan"), 5, 5]}, "non-finite or malformed box"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}, "non-finite or malformed box"),
])
def test_bad_annotation_is_dropped_and_counted_or_raised(tmp_path, bad, kind):
    ds = _build(tmp_path, [GOOD, bad])
    assert ds.problems.counts == {kind: 1}
    assert len(ds.records[0].boxes) == 1 and "annotation id 2" in ds.problems.examples[kind][0]
    with pytest.raises(DataError, match=f"annotation id 2.*|{kind}"):
        _build(tmp_path, [GOOD, bad], on_bad_annotation="error")


def test_partly_outside_box_is_clipped_and_noted(tmp_path):
    ds = _build(tmp_path, [{"image_id": 1, "category_id": 3, "bbox": [50, -5, 30, 20]}])
    np.testing.assert_allclose(ds.records[0].boxes, [[50, 0, 64, 15]])
    assert ds.records[0].labels.tolist() == [1] and ds.notes.counts == {"box clipped to image": 1}
    assert not ds.problems


def test_missing_image_file(tmp_path):
    ann = write_coco(tmp_path, [(1, 64, 64), (2, 64, 64)], [GOOD, {**GOOD, "image_id": 2}])
    (tmp_path / "img_2.png").unlink()
    cfg = data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)})
    with pytest.raises(DataError, match=r"image id 2: file not found: .*img_2.png"):
        build_dataset(cfg, "train")
    cfg.on_bad_image = "skip"
    ds = build_dataset(cfg, "train")
    assert len(ds) == 1 and ds.problems.counts == {"missing image file": 1}


def test_corrupt_image_raises_or_is_skipped_at_load_time(tmp_path, caplog):
    ann = write_coco(tmp_path, [(1, 64, 64), (2, 64, 64)], [GOOD, {**GOOD, "image_id": 2}])
    (tmp_path / "img_1.png").write_bytes(b"\x89PNG not really")
    cfg = data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)})
    with pytest.raises(DataError, match=r"image id 1: cannot decode image .*img_1.png"):
        build_dataset(cfg, "train")[0]
    cfg.on_bad_image = "skip"
    sample = build_dataset(cfg, "train")[0]
    assert sample.image_id == 2 and "skipping bad image" in caplog.text


def test_image_size_differs_from_annotation(tmp_path):
    ann = write_coco(tmp_path, [(1, 64, 64)], [GOOD])
    write_image(tmp_path / "img_1.png", 48, 64)
    with pytest.raises(DataError, match=r"image id 1: .*is 64x48 \(w x h\) but the annotation file says 64x64"):
        build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)}), "train")[0]


@pytest.mark.parametrize("channels", [1, 4])
def test_grayscale_and_rgba_images_load_as_rgb(tmp_path, channels):
    ann = write_coco(tmp_path, [(1, 64, 64)], [GOOD])
    write_image(tmp_path / "img_1.png", 64, 64, channels=channels, value=200)
    sample = build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)}), "train")[0]
    assert sample.image.shape[0] == 3
    report = check_split("train", str(ann), str(tmp_path))
    assert report.num_problems == 0 and report.image_notes.total() == 1


@pytest.mark.parametrize("content, message", [
    ("", "the annotation file is empty"),
    ("{not json", "not valid JSON"),
    (json.dumps({"foo": 1}), "not a COCO detection file"),
    (json.dumps([1, 2]), "not a COCO detection file"),
    (json.dumps({"images": [{"id": 1}], "categories": []}), r"images\[0\] lacks file_name"),
    (json.dumps({"images": [], "categories": []}), "'categories' is empty"),
])
def test_malformed_annotation_files(tmp_path, content, message):
    (tmp_path / "ann.json").write_text(content)
    with pytest.raises(DataError, match=message) as err:
        build_dataset(data_cfg({"ann_file": str(tmp_path / "ann.json"), "img_dir": str(tmp_path)}), "train")
    assert "ann.json" in str(err.value)


def test_missing_annotation_file_names_the_key(tmp_path):
    with pytest.raises(DataError, match="annotation file not found.*data.<split>.ann_file"):
        build_dataset(data_cfg({"ann_file": str(tmp_path / "nope.json"), "img_dir": str(tmp_path)}), "train")


def test_check_counts_every_problem_kind(tmp_path):
    ann = write_coco(tmp_path, [(1, 64, 64), (2, 64, 64), (3, 64, 64)],
                     [GOOD, {**GOOD, "bbox": [1, 1, 0, 0]}, {**GOOD, "category_id": 9}])
    (tmp_path / "img_2.png").unlink()
    (tmp_path / "img_3.png").write_bytes(b"garbage")
    report = check_split("train", str(ann), str(tmp_path))
    kinds = {**report.annotations.problems.counts, **report.image_problems.counts}
    assert kinds == {"degenerate box": 1, "unknown category id": 1, "missing image file": 1, "unreadable image": 1}
    assert "problems found: 4" in "\n".join(report.lines())


def test_cli_reports_bad_data_without_traceback(tmp_path, capsys):
    (tmp_path / "ann.json").write_text("[]")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"_base_: {(REPO / 'configs/_base_/datasets/synthetic.yaml')}\n"
                   f"data:\n  train:\n    ann_file: {tmp_path / 'ann.json'}\n")
    assert main(["data", "browse", str(cfg), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "not a COCO detection file" in err and "Traceback" not in err


def test_images_without_boxes_left_out_of_training_are_counted_and_logged(tmp_path, caplog):
    with caplog.at_level("INFO", logger="gfldet.data"):
        ds = _build(tmp_path, [GOOD], images=((1, 64, 64), (2, 64, 64)))
    assert ds.num_filtered_empty == 1 and [r.image_id for r in ds.records] == [1]
    assert "1 image(s) without boxes left out of training" in caplog.text


def _write_json(tmp_path, images, annotations) -> str:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "a"}]}))
    return str(path)


IMAGE = {"id": 1, "file_name": "img_1.png", "height": 64, "width": 64}


@pytest.mark.parametrize("field, value", [("width", "abc"), ("id", "abc"), ("height", [64]), ("id", 1.5)])
def test_wrong_typed_image_field_is_a_clear_error(tmp_path, field, value):
    ann = _write_json(tmp_path, [{**IMAGE, field: value}], [{"id": 1, **GOOD}])
    with pytest.raises(DataError, match=rf"ann.json: images\[0\].* has {field} .*; expected an integer"):
        check_split("train", ann, str(tmp_path))


@pytest.mark.parametrize("field, kind", [("image_id", "unknown image id"), ("category_id", "unknown category id")])
def test_unhashable_annotation_ids_are_counted_problems(tmp_path, field, kind):
    ds = _build(tmp_path, [GOOD, {**GOOD, field: [1]}])
    assert ds.problems.counts == {kind: 1} and "annotation id 2" in ds.problems.examples[kind][0]
    with pytest.raises(DataError, match=kind):
        _build(tmp_path, [GOOD, {**GOOD, field: [1]}], on_bad_annotation="error")


def test_annotations_without_images_are_problems_not_a_crash(tmp_path):
    ann = _write_json(tmp_path, [], [{"id": 1, **GOOD}])
    report = check_split("train", ann, str(tmp_path))
    assert {**report.annotations.problems.counts, **report.image_problems.counts} == {"unknown image id": 1,
                                                                                      "empty split": 1}
    with pytest.raises(DataError, match="none of its 0 image"):
        build_dataset(data_cfg({"ann_file": ann, "img_dir": str(tmp_path)}), "train")


def test_empty_split_and_split_without_boxes_are_problems(tmp_path):
    assert check_split("train", _write_json(tmp_path, [], []), str(tmp_path)).image_problems.counts == {
        "empty split": 1}
    write_image(tmp_path / "img_1.png", 64, 64)
    report = check_split("train", _write_json(tmp_path, [IMAGE], []), str(tmp_path))
    assert report.image_problems.counts == {"no valid box": 1} and report.num_problems == 1


def test_no_usable_image_error_says_where_they_went(tmp_path):
    with pytest.raises(DataError, match=r"none of its 2 image\(s\) is usable \(2 left out for having no boxes"):
        _build(tmp_path, [], images=((1, 64, 64), (2, 64, 64)))
    ann = write_coco(tmp_path, [(1, 64, 64), (2, 64, 64)], [GOOD], make_files=False)
    cfg = data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path / "nowhere")}, on_bad_image="skip")
    with pytest.raises(DataError, match=r"2 problem\(s\), below.*\n  missing image file: 2\n    .*img_1.png"):
        build_dataset(cfg, "train")


def test_skipped_images_travel_with_the_sample_and_batch(tmp_path):
    from gfldet.data import collate

    ann = write_coco(tmp_path, [(1, 64, 64), (2, 64, 64)], [GOOD, {**GOOD, "image_id": 2}])
    (tmp_path / "img_1.png").write_bytes(b"garbage")
    ds = build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)}, on_bad_image="skip"), "train")
    first, second = ds[0], ds[1]
    assert first.image_id == second.image_id == 2 and not second.skipped_images
    assert len(first.skipped_images) == 1 and "image id 1" in first.skipped_images[0]
    batch = collate([first, second], size_divisor=32, mean=[0, 0, 0], std=[1, 1, 1])
    assert batch.skipped_images == list(first.skipped_images)


def test_browse_draws_each_image_once_and_counts_the_skipped(tmp_path):
    from gfldet.data.browse import browse

    ann = write_coco(tmp_path, [(1, 64, 64), (2, 64, 64), (3, 64, 64)], [GOOD, *({**GOOD, "image_id": i}
                                                                                for i in (2, 3))])
    (tmp_path / "img_2.png").write_bytes(b"garbage")
    ds = build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)}, on_bad_image="skip"), "train")
    paths, skipped = browse(ds, tmp_path / "out", num=5, ext=".png")
    assert [p.name.split("_")[1] for p in paths] == ["id1", "id3"]
    assert skipped.counts == {"unreadable image": 1}


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_evaluation_reads_what_loading_accepted_and_skips_what_it_dropped(tmp_path, backend):
    from gfldet.engine.evaluator import CocoEvaluator

    anns = [{"image_id": 1, "category_id": 1, "bbox": ["4", "4", "20", "20"], "area": 400},  # numbers as text
            {"image_id": 1, "category_id": 1, "bbox": [30, 30, 10, 10]},                    # no area
            {"image_id": 1, "category_id": 3, "bbox": [1, 2, 3]},                           # malformed: dropped
            {"image_id": 1, "category_id": 3, "bbox": [5, 5, None, 9], "area": 1}]          # malformed: dropped
    ds = build_dataset(data_cfg({"ann_file": str(write_coco(tmp_path, [(1, 64, 64)], anns)),
                                 "img_dir": str(tmp_path)}), "train")
    assert ds.problems.total() == 2
    gt = ds.coco.dataset["annotations"]
    assert [a["bbox"] for a in gt] == [[4.0, 4.0, 20.0, 20.0], [30.0, 30.0, 10.0, 10.0]]
    assert [a["area"] for a in gt] == [400, 100.0]
    results = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [30, 30, 10, 10], "score": 0.8}]
    metrics, _ = CocoEvaluator(coco_gt=ds.coco, cat_ids=ds.cat_ids, class_names=ds.class_names,
                               backend=backend).evaluate(results, [1])
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and metrics["bbox_mAP_s"] == pytest.approx(1.0)
    assert metrics["per_class"]["b"] == -1.0                                   # its only boxes were malformed


def test_images_with_a_side_under_min_size_are_left_out_of_training(tmp_path, caplog):
    images = ((1, 64, 64), (2, 31, 200), (3, 32, 40))  # (id, height, width): image 2's shorter side is 31 px
    annotations = [{**GOOD, "image_id": i, "bbox": [1, 1, 20, 20]} for i in (1, 2, 3)]
    ann = write_coco(tmp_path, list(images), annotations)
    with caplog.at_level("INFO", logger="gfldet.data"):
        ds = build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path), "min_size": 32}), "train")
    assert ds.num_filtered_small == 1 and [r.image_id for r in ds.records] == [1, 3]
    assert "1 image(s) with a side under 32 px left out of training (min_size)" in caplog.text
    val = build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)},
                                 val={"ann_file": str(ann), "img_dir": str(tmp_path)}), "val")
    assert len(val) == 3  # evaluation keeps every image
    with pytest.raises(DataError, match=r"none of its 3 image\(s\) is usable \(3 left out for a side under 100 px"):
        build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path), "min_size": 100}), "train")
    with pytest.raises(ConfigError, match=r"data\.train\.min_size.*expected an integer >= 0"):
        build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path), "min_size": -1}), "train")


@pytest.mark.parametrize("command", ["check", "browse", "stats"])
def test_data_commands_on_a_config_without_data_section_say_so(tmp_path, capsys, command):
    extra = ["--out", str(tmp_path / "o")] if command == "browse" else []
    assert main(["data", command, str(REPO / "configs/_base_/models/gfl_r50_fpn.yaml"), *extra]) == 1
    err = capsys.readouterr().err
    assert "has no data section: give an experiment config" in err and "Traceback" not in err
