"""Collate padding and the grouped / sharded batch samplers."""

import numpy as np
import pytest
import torch

from gfldet.data.batching import Batch, collate
from gfldet.data.coco import Sample
from gfldet.data.samplers import AspectRatioBatchSampler, ShardBatchSampler


NORM = {"size_divisor": 32, "mean": [1.0, 2.0, 4.0], "std": [2.0, 2.0, 2.0]}   # 7 -> 3.0, 2.5, 1.5 per channel


def _sample(h, w, num_boxes=1, image_id=0):
    return Sample(image=torch.full((3, h, w), 7, dtype=torch.uint8), boxes=torch.ones(num_boxes, 4),
                  labels=torch.zeros(num_boxes, dtype=torch.int64), ignore_boxes=torch.zeros(0, 4), image_id=image_id,
                  file_name=f"{image_id}.jpg",
                  image_size=(h, w), original_size=(h * 2, w * 2), scale_factor=(0.5, 0.5))


def test_collate_pads_bottom_right_to_multiple_of_32_with_zeros():
    batch = collate([_sample(800, 1067, 2, 1), _sample(750, 1000, 0, 2)], **NORM)
    assert batch.images.shape == (2, 3, 800, 1088)
    assert batch.image_sizes == [(800, 1067), (750, 1000)]
    assert batch.images[0, :, :800, :1067].amax(dim=(1, 2)).tolist() == [3.0, 2.5, 1.5]
    assert batch.images[0, :, :800, :1067].amin(dim=(1, 2)).tolist() == [3.0, 2.5, 1.5]
    assert torch.all(batch.images[0, :, :, 1067:] == 0)
    assert torch.all(batch.images[1, :, 750:, :] == 0) and torch.all(batch.images[1, :, :, 1000:] == 0)
    assert torch.all(batch.images[1, 2, :750, :1000] == 1.5)
    assert [len(b) for b in batch.gt_boxes] == [2, 0] and batch.image_ids == [1, 2]
    assert batch.scale_factors == [(0.5, 0.5)] * 2 and batch.original_sizes == [(1600, 2134), (1500, 2000)]


def test_collate_exact_multiple_is_not_padded_further():
    assert collate([_sample(64, 96)], **NORM).images.shape == (1, 3, 64, 96)


def test_collate_normalises_float_images_without_clipping():
    """SSD's photometric distortion leaves float32 images outside [0, 255] (mmdetection's): kept as they are."""
    sample = _sample(32, 32)
    image = torch.full((3, 32, 32), 301.5)
    image[:, 0, 0] = -9.0
    sample.image = image
    batch = collate([sample], **NORM)
    assert batch.images[0, :, 1, 1].tolist() == [150.25, 149.75, 148.75]
    assert batch.images[0, :, 0, 0].tolist() == [-5.0, -5.5, -6.5]


def test_batch_to_moves_every_tensor():
    batch = collate([_sample(32, 32)], **NORM).to("cpu", non_blocking=True)
    assert isinstance(batch, Batch) and batch.gt_boxes[0].dtype == torch.float32 and len(batch) == 1


PORTRAIT = np.array([i % 3 == 0 for i in range(50)])


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


def test_grouped_sampler_batches_share_orientation_until_the_leftovers():
    sampler = AspectRatioBatchSampler(portrait=PORTRAIT, batch_size=4, seed=0, rank=0, world_size=1)
    batches = _epoch(sampler, 0)
    assert len(batches) == len(sampler) == 13
    indices = [i for b in batches for i, _ in b]
    assert sorted(indices) == list(range(50))
    mixed = [n for n, b in enumerate(batches) if len({PORTRAIT[i] for i, _ in b}) > 1]
    assert all(n >= len(batches) - 2 for n in mixed)   # only the (at most two) leftover batches may mix


def test_grouped_sampler_is_deterministic_per_seed_and_epoch():
    a = AspectRatioBatchSampler(portrait=PORTRAIT, batch_size=4, seed=7, rank=0, world_size=1)
    b = AspectRatioBatchSampler(portrait=PORTRAIT, batch_size=4, seed=7, rank=0, world_size=1)
    assert _epoch(a, 3) == _epoch(b, 3)
    assert _epoch(a, 3) != _epoch(a, 4)
    c = AspectRatioBatchSampler(portrait=PORTRAIT, batch_size=4, seed=8, rank=0, world_size=1)
    assert _epoch(c, 3) != _epoch(a, 3)


def test_skip_batches_resumes_exactly_and_only_once():
    sampler = AspectRatioBatchSampler(portrait=PORTRAIT, batch_size=4, seed=1, rank=0, world_size=1)
    full = _epoch(sampler, 2)
    sampler.skip_batches(5)
    assert _epoch(sampler, 2) == full[5:]
    assert _epoch(sampler, 2) == full


def test_distributed_ranks_partition_the_epoch_with_equal_lengths():
    per_rank = [_epoch(AspectRatioBatchSampler(portrait=PORTRAIT, batch_size=4, seed=0, rank=r, world_size=3), 1)
                for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1
    seen = [i for batches in per_rank for b in batches for i, _ in b]
    assert set(seen) == set(range(50)) and len(seen) == 51   # 50 padded to 51 by wrapping


def test_shard_sampler_covers_each_image_once():
    shards = [list(ShardBatchSampler(num_samples=10, batch_size=3, rank=r, world_size=3)) for r in range(3)]
    flat = sorted(i for s in shards for b in s for i in b)
    assert flat == list(range(10))
    assert shards[0] == [[0, 3, 6], [9]]


@pytest.mark.parametrize("batch_size", [1, 3, 50, 64])
def test_grouped_sampler_length_formula(batch_size):
    sampler = AspectRatioBatchSampler(portrait=PORTRAIT, batch_size=batch_size, seed=0, rank=0, world_size=1)
    assert len(list(sampler)) == len(sampler) == -(-50 // batch_size)
