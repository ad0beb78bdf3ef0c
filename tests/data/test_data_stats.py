"""Box statistics and the reg_max clipping estimate on hand-checkable boxes."""

import numpy as np

from tests.data.data_helpers import data_cfg, write_coco
from gfldet.data import build_dataset
from gfldet.data.stats import collect_box_stats, text_histogram

STRIDES = [8, 16, 32, 64, 128]


def _stats(tmp_path, bbox, size=(512, 512)):
    ann = write_coco(tmp_path, [(1, *size)], [{"image_id": 1, "category_id": 1, "bbox": bbox}])
    cfg = data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path),
                    "transforms": [{"type": "Resize", "scale": [1024, 1024]}]})
    return collect_box_stats(build_dataset(cfg, "train"), strides=STRIDES, octave_base_scale=8, topk=9)


def test_boxes_are_measured_at_training_scale_and_distances_in_stride_units(tmp_path):
    stats = _stats(tmp_path, [0, 0, 512, 512])          # resized x2 -> a 1024 px box filling the image
    np.testing.assert_allclose(stats.widths, [1024]) and np.testing.assert_allclose(stats.heights, [1024])
    assert len(stats.distances) > 0 and stats.num_gts_without_positive == 0
    # positives sit on the coarse levels: every distance is at most 1024 / 64 = 16 stride units
    assert stats.distances.max() <= 1024 / 64 and (stats.distances >= 0).all()
    assert stats.clip_share(16) == (0.0, 0.0)
    sides, priors = stats.clip_share(2)
    assert 0 < sides <= priors <= 1


def test_fixed_size_resize_measures_boxes_at_that_size(tmp_path):
    ann = write_coco(tmp_path, [(1, 200, 100)], [{"image_id": 1, "category_id": 1, "bbox": [10, 20, 40, 30]}])
    cfg = data_cfg({"ann_file": str(ann), "img_dir": str(tmp_path),
                    "transforms": [{"type": "Resize", "scale": [300, 300], "keep_ratio": False}]})
    stats = collect_box_stats(build_dataset(cfg, "train"), strides=STRIDES, octave_base_scale=8, topk=9)
    # a 100 px wide, 200 px high image: x3 in width, x1.5 in height
    np.testing.assert_allclose(stats.widths, [120]) and np.testing.assert_allclose(stats.heights, [45])


def test_small_box_needs_small_reg_max(tmp_path):
    stats = _stats(tmp_path, [100, 100, 12, 12])          # 24 px after resize: level P3 (stride 8)
    # priors at 208 and 216 px inside [200, 224]: distances (208 - 200) / 8 = 1 and (224 - 208) / 8 = 2
    assert len(stats.distances) == 4 and all(sorted(row) == [1, 1, 2, 2] for row in stats.distances.tolist())
    assert stats.clip_share(2) == (0.0, 0.0) and stats.clip_share(1.5) == (0.5, 1.0)


def test_text_histogram_counts_and_shares():
    lines = text_histogram(np.array([1.0, 2.0, 2.5, 10.0]), (0, 2, 5, 20), "title", width=4)
    assert lines[0] == "title" and " 1  25.0% #" in lines[1] and " 2  50.0% ##" in lines[2]
