"""``gfldet data split``: one COCO file into train / val (/ test) by image, reproducibly, losing nothing."""
import json
from collections import Counter

import pytest

from gfldet.cli import main
from gfldet.data import DataError
from gfldet.data.split import split_coco
from tests.data.data_helpers import write_coco


@pytest.fixture
def ann_file(tmp_path):
    images = [(i, 48, 64) for i in range(1, 21)]  # 20 images; image i has i % 3 boxes, of category 1 or 3
    annotations = [{"image_id": i, "category_id": 1 if k % 2 else 3, "bbox": [k, k, 10, 10], "area": 100}
                   for i in range(1, 21) for k in range(i % 3)]
    (tmp_path / "src").mkdir()
    path = write_coco(tmp_path / "src", images, annotations, make_files=False)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "info": {"description": "test"}, "licenses": []}))
    return path


def _read(path):
    return json.loads(path.read_text())


def test_every_image_and_annotation_lands_in_exactly_one_split(ann_file, tmp_path):
    summaries = split_coco(ann_file, tmp_path / "out", fractions={"train": None, "val": 0.25, "test": 0.1}, seed=0)
    assert [(s.name, s.images) for s in summaries] == [("train", 13), ("val", 5), ("test", 2)]
    source = _read(ann_file)
    splits = {s.name: _read(s.path) for s in summaries}
    image_ids = [image["id"] for split in splits.values() for image in split["images"]]
    assert sorted(image_ids) == list(range(1, 21))
    ann_ids = sorted(a["id"] for split in splits.values() for a in split["annotations"])
    assert ann_ids == sorted(a["id"] for a in source["annotations"])
    for split in splits.values():  # annotations with their images; categories and other keys kept
        ids = {image["id"] for image in split["images"]}
        assert all(a["image_id"] in ids for a in split["annotations"])
        assert split["categories"] == source["categories"] and split["info"] == {"description": "test"}
    assert sum(s.annotations for s in summaries) == len(source["annotations"])
    assert sum((s.boxes_per_category for s in summaries), start=Counter()) == {1: 7, 3: 14}


def test_same_seed_same_split_other_seed_other_split(ann_file, tmp_path):
    def val_ids(out, seed):
        summaries = split_coco(ann_file, tmp_path / out, fractions={"train": None, "val": 0.25}, seed=seed)
        return [image["id"] for image in _read(summaries[1].path)["images"]]

    assert val_ids("a", 0) == val_ids("b", 0) and val_ids("a2", 1) != val_ids("c", 0)


def test_existing_outputs_and_impossible_fractions_are_refused(ann_file, tmp_path):
    with pytest.raises(DataError, match="ann.json already exist.*choose another --out"):  # would overwrite the input
        split_coco(ann_file, ann_file.parent, fractions={"ann": None, "val": 0.5})
    assert _read(ann_file)["images"]  # the input is untouched
    with pytest.raises(DataError, match=r"together below 1"):
        split_coco(ann_file, tmp_path / "o1", fractions={"train": None, "val": 0.6, "test": 0.5})
    with pytest.raises(DataError, match=r"20 image\(s\) cannot make 2 splits with train 0, val 20"):
        split_coco(ann_file, tmp_path / "o2", fractions={"train": None, "val": 0.99})
    assert not (tmp_path / "o2").exists()  # refused before anything was written
    with pytest.raises(DataError, match="annotation file not found"):
        split_coco(tmp_path / "missing.json", tmp_path / "o3", fractions={"train": None, "val": 0.2})


def test_cli_prints_the_splits_and_notes_classes_missing_from_val(ann_file, tmp_path, capsys):
    assert main(["data", "split", str(ann_file), "--out", str(tmp_path / "out"), "--val", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "train: 19 images" in out and "val: 1 images" in out and "(a=" in out
    assert not (tmp_path / "out" / "test.json").exists()
    val = _read(tmp_path / "out" / "val.json")
    present = {a["category_id"] for a in val["annotations"]}
    assert ("note: no box of" in out) == (present != {1, 3})
    with pytest.raises(SystemExit):
        main(["data", "split", str(ann_file), "--out", str(tmp_path / "x"), "--val", "1.5"])
    assert "expected a share of the images in [0, 1)" in capsys.readouterr().err


def test_ids_written_as_strings_or_floats_keep_their_annotations(tmp_path):
    # training reads 12, 12.0 and "12" as one id; so must the split
    images = [{"id": str(i) if i % 2 else i, "file_name": f"{i}.png", "height": 48, "width": 64} for i in range(1, 11)]
    annotations = [{"id": i, "image_id": float(i), "category_id": 1, "bbox": [1, 1, 5, 5]} for i in range(1, 11)]
    source = tmp_path / "ann.json"
    source.write_text(json.dumps({"images": images, "annotations": annotations,
                                  "categories": [{"id": 1, "name": "a"}]}))
    summaries = split_coco(source, tmp_path / "out", fractions={"train": None, "val": 0.2})
    assert [(s.images, s.annotations) for s in summaries] == [(8, 8), (2, 2)]


def test_a_zero_share_writes_no_split(ann_file, tmp_path, capsys):
    assert main(["data", "split", str(ann_file), "--out", str(tmp_path / "out"), "--val", "0", "--test", "0.25"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test.json", "train.json"]
    assert "test: 5 images" in capsys.readouterr().out
    assert main(["data", "split", str(ann_file), "--out", str(tmp_path / "o2"), "--val", "0"]) == 1
    assert "--val and --test are both 0" in capsys.readouterr().err


def _rare_class_file(tmp_path):
    """20 images: 18 of class 1, 2 of class 3 (the rare one)."""
    images = [{"id": i, "file_name": f"{i}.png", "height": 48, "width": 64} for i in range(1, 21)]
    annotations = [{"id": i, "image_id": i, "category_id": 3 if i in (7, 15) else 1, "bbox": [1, 1, 5, 5]}
                   for i in range(1, 21)]
    path = tmp_path / "rare.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "common"}, {"id": 3, "name": "rare"}]}))
    return path


@pytest.mark.parametrize("seed", range(6))
def test_stratified_split_gives_every_split_its_share_of_a_rare_class(tmp_path, seed):
    summaries = split_coco(_rare_class_file(tmp_path), tmp_path / "out", seed=seed,
                           fractions={"train": None, "val": 0.25, "test": 0.25})
    assert [(s.name, s.images) for s in summaries] == [("train", 10), ("val", 5), ("test", 5)]
    # 2 rare images for shares 0.5 / 0.25 / 0.25: one in train, one in val or test, never both in one split
    assert summaries[0].boxes_per_category[3] == 1
    assert summaries[1].boxes_per_category[3] + summaries[2].boxes_per_category[3] == 1


def test_unstratified_split_cuts_the_shuffled_order(tmp_path):
    # without stratification some seeds leave the rare class out of val; with it, none does
    def rare_in_val(seed, stratify):
        summaries = split_coco(_rare_class_file(tmp_path), tmp_path / f"o{seed}{stratify}", seed=seed,
                               stratify=stratify, fractions={"train": None, "val": 0.25})
        assert [s.images for s in summaries] == [15, 5]
        return summaries[1].boxes_per_category[3]

    assert 0 in [rare_in_val(seed, False) for seed in range(12)]
    assert [rare_in_val(seed, True) for seed in range(12)] == [1] * 12
