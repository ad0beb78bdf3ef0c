"""VOC -> COCO conversion (coordinate convention, splits, classes) and BCCD end to end."""

import json

import pytest
import torch

from tests.data.data_helpers import REPO, bccd_root, write_image
from gfldet.cli import main
from gfldet.config import load_config
from gfldet.data import build_dataloader
from gfldet.data.check import check_split
from gfldet.data.problems import DataError
from gfldet.data.voc import convert_voc

XML = """<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = "<object><name>{cls}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>" \
      "<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"


def _voc(tmp_path, items):
    (tmp_path / "ann").mkdir()
    for name, objects in items.items():
        body = "".join(OBJ.format(cls=c, d=d, b=b) for c, b, d in objects)
        (tmp_path / "ann" / f"{name}.xml").write_text(XML.format(name=name, objects=body))
        write_image(tmp_path / "img" / f"{name}.jpg", 48, 64)


def test_voc_coordinates_classes_and_difficult(tmp_path):
    _voc(tmp_path, {"a": [("zebra", (11, 21, 30, 40), 0), ("ant", (1, 1, 64, 48), 1)], "b": []})
    report = convert_voc(ann_dir=tmp_path / "ann", img_dir=tmp_path / "img", out_dir=tmp_path / "out")
    coco = json.loads((tmp_path / "out" / "all.json").read_text())
    assert report["classes"] == ["ant", "zebra"]
    assert [c["id"] for c in coco["categories"]] == [1, 2]
    first, second = coco["annotations"]
    assert first["bbox"] == [10, 20, 19, 19] and first["category_id"] == 2 and first["iscrowd"] == 0
    assert second["bbox"] == [0, 0, 63, 47] and second["iscrowd"] == 1
    assert [i["file_name"] for i in coco["images"]] == ["a.jpg", "b.jpg"]


def test_voc_splits_and_given_classes(tmp_path):
    _voc(tmp_path, {"a": [("cat", (2, 2, 9, 9), 0), ("dog", (3, 3, 9, 9), 0)], "b": [("dog", (5, 5, 9, 9), 0)]})
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "val.txt").write_text("b\n\n")
    report = convert_voc(ann_dir=tmp_path / "ann", img_dir=tmp_path / "img", out_dir=tmp_path / "out",
                         splits={"train": tmp_path / "train.txt", "val": tmp_path / "val.txt"}, classes=["dog"])
    assert report["splits"]["train"]["annotations"] == 1 and report["splits"]["val"]["images"] == 1
    assert report["skipped"].counts == {"class not in --classes": 1}


def test_non_finite_voc_coordinate_is_skipped_and_counted(tmp_path):
    _voc(tmp_path, {"a": [("cat", (2, "nan", 9, 9), 0), ("cat", (3, 3, 9, 9), 0)]})
    report = convert_voc(ann_dir=tmp_path / "ann", img_dir=tmp_path / "img", out_dir=tmp_path / "out")
    coco = json.loads((tmp_path / "out" / "all.json").read_text(), parse_constant=pytest.fail)
    assert [a["bbox"] for a in coco["annotations"]] == [[2, 2, 6, 6]]
    assert report["skipped"].counts == {"non-finite box coordinate": 1}


def test_malformed_xml_names_file_and_line(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "img").mkdir()
    (tmp_path / "ann" / "x.xml").write_text("<annotation>\n<size></annotation>")
    with pytest.raises(DataError, match=r"x.xml:2:\d+: malformed XML"):
        convert_voc(ann_dir=tmp_path / "ann", img_dir=tmp_path / "img", out_dir=tmp_path / "out")


@pytest.fixture(scope="module")
def bccd_coco(tmp_path_factory):
    root = bccd_root()
    out = tmp_path_factory.mktemp("bccd")
    splits = [f"--split={s}={root / 'ImageSets/Main' / s}.txt" for s in ("train", "val", "test")]
    assert main(["data", "voc2coco", "--ann-dir", str(root / "Annotations"), "--img-dir",
                 str(root / "JPEGImages"), "--out", str(out), *splits]) == 0
    return root, out


def test_bccd_converts_with_its_splits(bccd_coco):
    _, out = bccd_coco
    counts = {s: len(json.loads((out / f"{s}.json").read_text())["images"]) for s in ("train", "val", "test")}
    assert counts == {"train": 205, "val": 87, "test": 72}
    assert [c["name"] for c in json.loads((out / "train.json").read_text())["categories"]] == \
        ["Platelets", "RBC", "WBC"]


def test_bccd_check_reports_the_two_degenerate_boxes(bccd_coco):
    root, out = bccd_coco
    reports = [check_split(s, str(out / f"{s}.json"), str(root / "JPEGImages")) for s in ("train", "val", "test")]
    assert sum(r.annotations.problems.counts["degenerate box"] for r in reports) == 2
    assert sum(r.num_problems for r in reports) == 2


def test_bccd_loads_and_batches_at_reference_scale(bccd_coco):
    root, out = bccd_coco
    cfg = load_config(REPO / "configs/_base_/datasets/bccd.yaml").data
    for split in ("train", "val"):
        cfg[split].ann_file = str(out / f"{split}.json")
        cfg[split].img_dir = str(root / "JPEGImages")
    cfg.num_workers = 0
    batch = next(iter(build_dataloader(cfg, "train", seed=0)))
    assert batch.images.shape == (2, 3, 800, 1088) and batch.image_sizes == [(800, 1067)] * 2
    assert batch.scale_factors[0] == (1067 / 640, 800 / 480)
    assert all(len(b) > 0 and torch.isfinite(b).all() for b in batch.gt_boxes)
    val = build_dataloader(cfg, "val")
    assert len(val.dataset) == 87 and val.dataset.problems.counts == {"degenerate box": 1}
