"""Batch samplers: aspect-ratio grouped shuffled batches for training, sequential shards for evaluation.

Both are distributed-aware: ``rank`` / ``world_size`` default to torch.distributed's when it is initialised.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["AspectRatioBatchSampler", "ShardBatchSampler", "dist_rank_world"]


def dist_rank_world() -> tuple[int, int]:
    """(rank, world_size) of torch.distributed when initialised, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class AspectRatioBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled batches whose images share an orientation (mmdetection's AspectRatioBatchSampler semantics).

    Each epoch: a permutation of all indices from ``torch.Generator().manual_seed(seed + epoch)`` (as torch's
    DistributedSampler), padded by wrapping to a multiple of ``world_size``; this rank takes every
    ``world_size``-th index from ``rank``. Indices go into a landscape or a portrait bucket; a bucket that reaches
    ``batch_size`` is yielded. At the end the leftovers of both buckets are yielded together in batches of up to
    ``batch_size`` (mixed orientations), so every rank yields ``ceil(per_rank / batch_size)`` batches.

    Yields lists of ``(index, augment_seed)``: the seed (drawn from the same generator) makes each sample's random
    augmentation depend only on (seed, epoch, position), not on worker processes -- resuming mid-epoch with
    ``skip_batches`` reproduces the remaining batches exactly.
    """

    def __init__(self, *, portrait: Sequence[bool], batch_size: int, seed: int, rank: int | None = None,
                 world_size: int | None = None):
        default_rank, default_world = dist_rank_world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        self.portrait = np.asarray(portrait, bool)
        self.batch_size, self.seed = batch_size, seed
        self.epoch, self._skip = 0, 0
        self.per_rank = math.ceil(len(self.portrait) / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration uses."""
        self.epoch = epoch

    def skip_batches(self, num_batches: int) -> None:
        """Leave out the first ``num_batches`` batches of the next iteration only (exact mid-epoch resume)."""
        self._skip = num_batches

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def _rank_items(self) -> list[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.portrait), generator=generator)
        aug_seeds = torch.randint(0, 2**31 - 1, (len(order),), generator=generator)
        total = self.per_rank * self.world_size
        padded = torch.cat([order, order.repeat(math.ceil(total / len(order)))])[:total]
        padded_seeds = torch.cat([aug_seeds, aug_seeds.repeat(math.ceil(total / len(order)))])[:total]
        return list(zip(padded[self.rank::self.world_size].tolist(), padded_seeds[self.rank::self.world_size].tolist()))

    def _batches(self) -> Iterator[list[tuple[int, int]]]:
        buckets: tuple[list, list] = ([], [])
        for item in self._rank_items():
            bucket = buckets[int(self.portrait[item[0]])]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()
        leftover = buckets[0] + buckets[1]
        for start in range(0, len(leftover), self.batch_size):
            yield leftover[start:start + self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        skip, self._skip = self._skip, 0
        for number, batch in enumerate(self._batches()):
            if number >= skip:
                yield batch


class ShardBatchSampler(Sampler[list[int]]):
    """Evaluation batches in file order: this rank takes indices ``rank, rank + world_size, ...`` (no padding,
    so no image is evaluated twice; ranks may differ by one image)."""

    def __init__(self, *, num_samples: int, batch_size: int, rank: int | None = None,
                 world_size: int | None = None):
        default_rank, default_world = dist_rank_world()
        rank = default_rank if rank is None else rank
        world_size = default_world if world_size is None else world_size
        self.indices = list(range(rank, num_samples, world_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start:start + self.batch_size]
