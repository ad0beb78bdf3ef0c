"""Synthetic dataset determinism, dataset/loader building from config, num_classes filling, test-dev files."""

import hashlib
import json

import pytest
import torch

from tests.data.data_helpers import data_cfg, write_coco
from gfldet.config import Config, ConfigError
from gfldet.data import Batch, build_dataloader, build_dataset, fill_num_classes
from gfldet.data.synthetic import CLASS_NAMES, SynthSpec, generate_synthetic


def _digest(directory):
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_synthetic_is_byte_identical_for_a_seed(synth_dir, tmp_path):
    generate_synthetic(SynthSpec(num_train=16, num_val=4, height=96, width=128, seed=3), tmp_path / "again")
    assert _digest(synth_dir) == _digest(tmp_path / "again")
    generate_synthetic(SynthSpec(num_train=16, num_val=4, height=96, width=128, seed=4), tmp_path / "other")
    assert _digest(synth_dir)["train.json"] != _digest(tmp_path / "other")["train.json"]


def test_synthetic_content(synth_dir):
    train = json.loads((synth_dir / "train.json").read_text())
    assert [c["name"] for c in train["categories"]] == list(CLASS_NAMES)
    assert len(train["images"]) == 16 and len(train["annotations"]) > 16
    sizes = {(i["height"], i["width"]) for i in train["images"]}
    assert sizes <= {(96, 128), (128, 96)}
    for ann in train["annotations"]:
        x, y, w, h = ann["bbox"]
        image = train["images"][ann["image_id"] - 1]
        assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]


def _synth_cfg(synth_dir, **overrides):
    split = {"ann_file": str(synth_dir / "train.json"), "img_dir": str(synth_dir)}
    val = {"ann_file": str(synth_dir / "val.json"), "img_dir": str(synth_dir)}
    return data_cfg({**split, "transforms": [{"type": "Resize", "scale": [128, 128]},
                                             {"type": "HorizontalFlip", "p": 0.5}]}, val, **overrides)


def test_train_loader_yields_padded_batches_and_is_reproducible(synth_dir):
    cfg = _synth_cfg(synth_dir, batch_size=4)
    loader = build_dataloader(cfg, "train", seed=5)
    batches = list(loader)
    assert all(isinstance(b, Batch) and b.images.shape[2] % 32 == 0 and b.images.shape[3] % 32 == 0
               for b in batches)
    ds = loader.dataset
    assert sum(len(b) for b in batches) == len(ds) and ds.num_filtered_empty == 16 - len(ds)
    again = list(build_dataloader(cfg, "train", seed=5))
    assert all(torch.equal(a.images, b.images) and a.image_ids == b.image_ids for a, b in zip(batches, again))
    for b in batches:
        for boxes, labels, (h, w) in zip(b.gt_boxes, b.gt_labels, b.image_sizes):
            assert boxes.shape[1] == 4 and labels.dtype == torch.int64 and labels.max() < 4
            assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes[:, :2] >= 0).all()


def test_worker_processes_give_the_same_batches(synth_dir):
    cfg = _synth_cfg(synth_dir, batch_size=4)
    single = list(build_dataloader(cfg, "train", seed=1))
    cfg.num_workers = 2
    multi = list(build_dataloader(cfg, "train", seed=1))
    assert all(torch.equal(a.images, b.images) for a, b in zip(single, multi))


def test_eval_split_keeps_empty_images_and_order(synth_dir):
    loader = build_dataloader(_synth_cfg(synth_dir), "val")
    ids = [i for b in loader for i in b.image_ids]
    assert ids == [1, 2, 3, 4]


def test_eval_batch_size_is_the_split_s_own(synth_dir):
    cfg = _synth_cfg(synth_dir, batch_size=4)                   # training: 4 images per batch; val: 1 (helper)
    assert [len(b) for b in build_dataloader(cfg, "val")] == [1, 1, 1, 1]
    cfg.val.batch_size = 3
    assert [len(b) for b in build_dataloader(cfg, "val")] == [3, 1]
    del cfg.val["batch_size"]
    with pytest.raises(ConfigError, match=r"missing key 'data\.val\.batch_size'"):
        build_dataloader(cfg, "val")
    for bad in (0, "two"):
        cfg.val.batch_size = bad
        with pytest.raises(ConfigError, match=r"data\.val\.batch_size\)?: expected an integer >= 1"):
            build_dataloader(cfg, "val")


def test_labels_are_contiguous_and_cat_ids_original(tmp_path):
    ann = write_coco(tmp_path, [(1, 64, 64)], [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 9, 9]},
                                               {"image_id": 1, "category_id": 1, "bbox": [2, 2, 9, 9], "iscrowd": 1}])
    ds = build_dataset(data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path)}), "train")
    assert ds.cat_ids == [1, 3] and ds.class_names == ["a", "b"] and ds.num_classes == 2
    assert ds.coco.getCatIds() == [1, 3] and len(ds.coco.getAnnIds(imgIds=[1])) == 2   # the file as written
    sample = ds[0]
    assert sample.labels.tolist() == [1] and sample.ignore_boxes.shape == (1, 4)


def test_test_dev_image_info_without_annotations(tmp_path):
    write_coco(tmp_path, [(1, 64, 64), (2, 64, 48)], [])
    info = json.loads((tmp_path / "ann.json").read_text())
    del info["annotations"]
    (tmp_path / "info.json").write_text(json.dumps(info))
    cfg = data_cfg({"ann_file": str(tmp_path / "info.json"), "img_dir": str(tmp_path)})
    cfg.test = {"ann_file": str(tmp_path / "info.json"), "img_dir": str(tmp_path),
                "transforms": [{"type": "Resize", "scale": [1333, 800]}]}
    ds = build_dataset(cfg, "test")
    assert len(ds) == 2 and not ds.has_annotations and ds.cat_ids == [1, 3]
    assert ds[1].boxes.shape == (0, 4)


def test_fill_num_classes_fills_and_checks(synth_dir):
    cfg = Config({"model": {"head": {}}, "data": _synth_cfg(synth_dir)})
    assert fill_num_classes(cfg) == 4 and cfg.model.num_classes == 4
    cfg.model.num_classes = 80
    with pytest.raises(ConfigError, match=r"num_classes is 80 but the training annotations .* have 4 categories"):
        fill_num_classes(cfg)


def test_config_typos_are_errors(synth_dir):
    cfg = _synth_cfg(synth_dir)
    cfg.train.filter_emtpy = True
    with pytest.raises(ConfigError, match="did you mean 'filter_empty'"):
        build_dataset(cfg, "train")
    with pytest.raises(ConfigError, match="unknown data split"):
        build_dataset(_synth_cfg(synth_dir), "training")
    cfg = _synth_cfg(synth_dir, on_bad_image="ignore")
    with pytest.raises(ValueError, match="on_bad_image must be one of error, skip"):
        build_dataset(cfg, "train")
