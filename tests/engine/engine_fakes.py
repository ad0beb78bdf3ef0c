"""A tiny detector and loader honouring the model / data contracts, for testing the engine in isolation."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class FakeBatch:
    images: torch.Tensor
    image_sizes: list
    scale_factors: list
    gt_boxes: list
    gt_labels: list
    image_ids: list = field(default_factory=list)
    skipped_images: list = field(default_factory=list)

    def to(self, device, non_blocking=False):
        return FakeBatch(self.images.to(device), self.image_sizes, self.scale_factors,
                         [b.to(device) for b in self.gt_boxes], [lbl.to(device) for lbl in self.gt_labels],
                         self.image_ids, self.skipped_images)


class TinyDetector(nn.Module):
    """conv -> GroupNorm -> pooled features -> one box [4] and class logits [C] per image.

    forward() returns two losses (L1 on the first GT box, CE on its label); ``nan_at`` makes selected calls NaN.
    """

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.box = nn.Linear(8, 4)
        self.cls = nn.Linear(8, num_classes)
        self.calls = 0
        self.nan_at: set[int] = set()

    def features(self, images):
        return torch.relu(self.norm(self.conv(images))).mean(dim=(2, 3))

    def forward(self, images, image_sizes, gt_boxes, gt_labels):
        self.calls += 1
        feats = self.features(images)
        target_boxes = torch.stack([b[0] for b in gt_boxes]) / 32.0
        target_labels = torch.stack([lbl[0] for lbl in gt_labels])
        loss_box = (self.box(feats) - target_boxes).abs().mean()
        loss_cls = nn.functional.cross_entropy(self.cls(feats), target_labels)
        if self.calls in self.nan_at:
            loss_box = loss_box * float("nan")
        return {"loss_box": loss_box, "loss_cls": loss_cls}

    @torch.no_grad()
    def predict(self, images, image_sizes, scale_factors):
        feats = self.features(images)
        boxes, scores = self.box(feats) * 32.0, self.cls(feats).softmax(-1)
        return [{"boxes": boxes[i:i + 1], "scores": scores[i].max()[None], "labels": scores[i].argmax()[None]}
                for i in range(len(images))]


class FakeDataset(torch.utils.data.Dataset):
    """``n`` random 3x16x16 images (seeded), each with one GT box and label; ``skip_reasons`` {index: reason}
    makes the batch holding an index report that an image was skipped before it (``data.on_bad_image: skip``)."""

    def __init__(self, n: int = 16, num_classes: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 16, 16, generator=g)
        xy = torch.randint(0, 8, (n, 2), generator=g).float()
        self.boxes = torch.cat([xy, xy + torch.randint(2, 8, (n, 2), generator=g).float()], dim=1)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.skip_reasons: dict[int, str] = {}

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return index


class FakeBatchSampler(torch.utils.data.Sampler):
    """Shuffled from (seed, epoch), rank r takes ``perm[r::world]``; ``skip_batches(n)`` for one pass."""

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.epoch, self._skip = 0, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def skip_batches(self, n: int):
        self._skip = n

    def __len__(self):
        return self.n // (self.batch_size * self.world_size)

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        mine = perm[self.rank::self.world_size].tolist()
        batches = [mine[i * self.batch_size:(i + 1) * self.batch_size] for i in range(len(self))]
        skip, self._skip = self._skip, 0
        return iter(batches[skip:])


def make_loader(dataset: FakeDataset, batch_size: int, **sampler_kwargs) -> torch.utils.data.DataLoader:
    def collate(indices):
        return FakeBatch(images=dataset.images[indices], image_sizes=[(16, 16)] * len(indices),
                         scale_factors=[(1.0, 1.0)] * len(indices),
                         gt_boxes=[dataset.boxes[i:i + 1] for i in indices],
                         gt_labels=[dataset.labels[i:i + 1] for i in indices], image_ids=list(indices),
                         skipped_images=[dataset.skip_reasons[i] for i in indices if i in dataset.skip_reasons])

    sampler = FakeBatchSampler(len(dataset), batch_size, **sampler_kwargs)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)


def make_trainer(work_dir, *, max_iters: int = 8, batch_size: int = 4, checkpoint_interval: int = 2,
                 amp: str = "off", ema_decay=None, grad_clip=None, max_nan_steps: int = 3, evaluate=None,
                 eval_interval: int = 1000, model=None, by_epoch: bool = False, lr: float = 0.1, rank: int = 0,
                 world_size: int = 1, seed: int = 0, compile_mode=None, log_interval: int = 1, milestone=None,
                 accumulate: int = 1, dataset_size: int = 16):
    """A Trainer over TinyDetector + FakeDataset with SGD and a warmup + step schedule (x0.1 after ``milestone``
    iterations, default ``max_iters // 2``); ``accumulate`` batches per optimiser step."""
    from gfldet.config import Config
    from gfldet.engine.checkpointer import Checkpointer
    from gfldet.engine.logging import TrainLogger
    from gfldet.engine.optim import build_optimizer
    from gfldet.engine.schedules import build_lr_scheduler
    from gfldet.engine.trainer import Trainer, steps_per_epoch

    torch.manual_seed(seed)
    model = model or TinyDetector()
    loader = make_loader(FakeDataset(dataset_size), batch_size, seed=seed, rank=rank, world_size=world_size)
    optimizer = build_optimizer(model, Config(dict(type="SGD", lr=lr, momentum=0.9, weight_decay=1e-4, bias_lr_mult=2.0,
                                              bias_decay_mult=0.0, norm_decay_mult=0.0, base_batch_size=4,
                                              auto_scale_lr=False)),
                                total_batch_size=batch_size * world_size * accumulate)
    schedule = Config(dict(type="step", by_epoch=False, milestones=[milestone or max_iters // 2], gamma=0.1,
                           warmup_iters=2, warmup_ratio=0.1))
    scheduler = build_lr_scheduler(optimizer, schedule, iters_per_epoch=steps_per_epoch(len(loader), accumulate),
                                   max_iters=max_iters)
    if world_size > 1:
        model_for_trainer = torch.nn.parallel.DistributedDataParallel(model)
    else:
        model_for_trainer = model
    return Trainer(model=model_for_trainer, optimizer=optimizer, lr_scheduler=scheduler, train_loader=loader,
                   device=torch.device("cpu"), max_iters=max_iters, accumulate=accumulate, by_epoch=by_epoch,
                   eval_interval=eval_interval, checkpoint_interval=checkpoint_interval, evaluate=evaluate,
                   amp=amp, grad_clip=grad_clip, ema_decay=ema_decay, max_nan_steps=max_nan_steps,
                   compile_mode=compile_mode, checkpointer=Checkpointer(work_dir=work_dir, keep_last=2),
                   logger=TrainLogger(work_dir=work_dir, enabled=rank == 0, max_iters=max_iters,
                                      log_interval=log_interval, tensorboard=False))
