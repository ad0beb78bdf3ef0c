"""The training loop: AMP, gradient clipping, NaN guard, EMA, periodic evaluation and checkpoints.

The trainer knows nothing about detection: the model's forward returns a dict of scalar losses, which it sums.
One "unit" of the schedule is an epoch (``by_epoch``) or an iteration; eval and checkpoint intervals use it.
An iteration is one optimiser step; with ``accumulate = k`` it takes k batches of the loader (gradient
accumulation), so the schedule, warm-up included, counts optimiser steps whatever k is.
"""
from __future__ import annotations

import contextlib
import math
from itertools import islice
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gfldet.engine.amp import autocast, check_amp_mode, make_grad_scaler
from gfldet.engine.checkpointer import Checkpointer, capture_rng_state, restore_rng_state
from gfldet.engine.distributed import (all_gather_objects, broadcast_object, get_rank, get_world_size,
                                       is_main_process)
from gfldet.engine.logging import TrainLogger
from gfldet.errors import GfldetError

__all__ = ["Trainer", "NonFiniteLossError", "steps_per_epoch"]


def steps_per_epoch(num_batches: int, accumulate: int) -> int:
    """Optimiser steps in an epoch of ``num_batches`` loader batches, ``accumulate`` batches per step (the last
    step of an epoch takes what is left)."""
    return math.ceil(num_batches / accumulate)


class NonFiniteLossError(GfldetError, RuntimeError):
    """Raised after ``max_nan_steps`` consecutive iterations with a NaN/Inf loss or gradient."""


class Trainer:
    """Runs ``max_iters`` iterations of ``model`` over ``train_loader``.

    Args:
        model: detector (optionally DDP-wrapped); ``model(images, image_sizes, gt_boxes, gt_labels)`` -> losses dict.
        optimizer, lr_scheduler: the scheduler is stepped once per iteration (optimiser step).
        train_loader: yields Batch; its ``batch_sampler`` has ``batch_size`` (images per process),
            ``set_epoch(epoch)`` and ``skip_batches(n)``.
        device: where batches go.
        max_iters: total iterations (optimiser steps).
        accumulate: loader batches per optimiser step (gradient accumulation). Each batch's losses are divided by
            the number of batches of its step, so the gradient is their mean. The head normalises each batch by
            its own positives, so k batches of n images equal one batch of k*n only when their positive counts
            are equal (as with mmdetection's ``accumulative_counts``); under DDP, processes skip the gradient
            all-reduce on all but the last batch of a step.
        by_epoch: whether ``eval_interval`` / ``checkpoint_interval`` count epochs (else iterations); also names
            periodic checkpoints ``epoch_N.pth`` vs ``iter_N.pth``.
        evaluate: ``evaluate(bare_model) -> metrics`` with ``best_metric`` among the keys (run on every rank; the
            returned metrics of rank 0 are used), or None for no evaluation.
        amp: ``off`` | ``fp16`` | ``bf16``.  grad_clip: max gradient L2 norm, or None.
        ema_decay: decay of a model EMA (evaluated and checkpointed instead of the raw weights), or None.
        max_nan_steps: stop after this many consecutive non-finite iterations (each one is skipped and logged).
        compile_mode: a ``torch.compile`` mode for the training forward (model + losses; data-dependent steps
            such as target assignment become graph breaks), or None for eager. Only the call is compiled: the
            module, its EMA copy, evaluation and checkpoints stay eager and keep their state_dict keys.
        checkpointer, logger: where state and logs go; ``meta`` (e.g. the config) is stored in every checkpoint.
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_scheduler: torch.optim.lr_scheduler.LRScheduler, train_loader, device: torch.device,
                 max_iters: int, accumulate: int = 1, by_epoch: bool, eval_interval: int, checkpoint_interval: int,
                 evaluate: Callable[[nn.Module], dict] | None, best_metric: str = "bbox_mAP", amp: str = "off",
                 grad_clip: float | None = None, ema_decay: float | None = None, max_nan_steps: int,
                 compile_mode: str | None = None, checkpointer: Checkpointer, logger: TrainLogger,
                 meta: dict | None = None):
        self.model = model
        self.compile_mode = compile_mode
        self._compiled: tuple[nn.Module, Callable] | None = None  # (the model it wraps, torch.compile's wrapper)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_loader = train_loader
        self.device = device
        self.max_iters = max_iters
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.accumulate = accumulate
        self.batches_per_epoch = len(train_loader)
        self.iters_per_epoch = steps_per_epoch(self.batches_per_epoch, accumulate)
        self.by_epoch = by_epoch
        self.eval_interval = eval_interval
        self.checkpoint_interval = checkpoint_interval
        self.evaluate = evaluate
        self.best_metric = best_metric
        self.amp = check_amp_mode(amp)
        self.scaler = make_grad_scaler(device, amp)
        self.grad_clip = grad_clip
        self.ema = (AveragedModel(self.bare_model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
                    if ema_decay else None)
        self.max_nan_steps = max_nan_steps
        self.checkpointer = checkpointer
        self.logger = logger
        self.meta = dict(meta or {})
        self.iteration = 0      # finished iterations
        self.epoch = 0          # finished epochs
        self.iter_in_epoch = 0  # finished iterations of the current epoch (sampler position)
        self.best_score = -math.inf
        self.nan_streak = 0
        self.skipped_images: set[str] = set()  # reasons of the images the loader skipped (on_bad_image: skip)

    @property
    def bare_model(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.bare_model

    # -- the loop -----------------------------------------------------------------------------------
    def train(self) -> None:
        """Train up to ``max_iters``. Afterwards ``model`` is the bare model: the DistributedDataParallel wrapper is
        let go, as it must not outlive the process group (see ``cleanup_distributed``)."""
        if self.compile_mode and self.iteration < self.max_iters:
            self.logger.event(f"torch.compile (mode {self.compile_mode}): the first iteration and the first ones "
                              f"with new input shapes compile (minutes on a CPU)", iteration=self.iteration + 1)
        try:
            while self.iteration < self.max_iters:
                self._train_epoch()
        finally:
            self.logger.close()
            self.model = self.bare_model
            self._compiled = None  # the compiled wrapper holds the DDP wrapper too

    def _model_call(self) -> Callable:
        """What ``train_step`` calls: ``self.model``, or a ``torch.compile`` wrapper around the model held now
        (built at the first call, rebuilt when ``self.model`` was replaced; it compiles at its own first call)."""
        if not self.compile_mode:
            return self.model
        if self._compiled is None or self._compiled[0] is not self.model:
            self._compiled = (self.model, torch.compile(self.model, mode=self.compile_mode))
        return self._compiled[1]

    def _train_epoch(self) -> None:
        self.model.train()
        sampler = self.train_loader.batch_sampler
        sampler.set_epoch(self.epoch)
        if 0 < self.iter_in_epoch < self.iters_per_epoch:  # resumed mid-epoch (not after an epoch's last step)
            sampler.skip_batches(self.iter_in_epoch * self.accumulate)
        batches = self._noting_skipped_images(self.train_loader)
        while self.iter_in_epoch < self.iters_per_epoch and self.iteration < self.max_iters:
            lr = self.optimizer.param_groups[0]["lr"]  # the LR this step uses (the scheduler steps inside)
            scalars = self.train_step(batches, num_batches=self._batches_of_this_step())
            self.iteration += 1
            self.iter_in_epoch += 1
            self.logger.log_step(iteration=self.iteration, epoch=self.epoch, scalars=scalars, lr=lr)
            if not self.by_epoch:
                self._after_unit(self.iteration, final=self.iteration >= self.max_iters)
        if self.iter_in_epoch >= self.iters_per_epoch:
            self.epoch += 1
            self.iter_in_epoch = 0
            if self.by_epoch:
                self._after_unit(self.epoch, final=self.iteration >= self.max_iters)

    def _batches_of_this_step(self) -> int:
        """``accumulate``, or what is left of the epoch for its last step."""
        return min(self.accumulate, self.batches_per_epoch - self.iter_in_epoch * self.accumulate)

    def train_step(self, batches: Iterable, num_batches: int = 1) -> dict[str, float]:
        """One optimiser step on the next ``num_batches`` batches of ``batches``; returns the losses (means over
        the batches), their sum ``loss`` and ``grad_norm`` as floats.

        A non-finite loss or gradient skips the update (fp16: the GradScaler skips it and lowers its scale).
        """
        self.optimizer.zero_grad(set_to_none=True)
        losses = self._accumulate_gradients(batches, num_batches)
        loss = sum(losses.values())
        self.scaler.unscale_(self.optimizer)  # no-op unless fp16
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if self.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, grad_norm)
        # One host sync for every logged number and the finiteness check.
        values = torch.stack([loss.float(), grad_norm.float(), *(v.float() for v in losses.values())])
        loss_value, grad_value, *loss_values = values.tolist()
        # fp16 overflow of the gradients is the GradScaler's business; a non-finite loss always counts.
        finite = math.isfinite(loss_value) and (self.scaler.is_enabled() or math.isfinite(grad_value))
        if finite or self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if finite and self.ema is not None:
            self.ema.update_parameters(self.bare_model)
        self.lr_scheduler.step()
        self._nan_guard(finite, loss_value, grad_value)
        return {"loss": loss_value, "grad_norm": grad_value, **dict(zip(losses.keys(), loss_values))}

    def _accumulate_gradients(self, batches: Iterable, num_batches: int) -> dict[str, torch.Tensor]:
        """Forward and backward of ``num_batches`` batches, each loss divided by ``num_batches``: the gradients
        and the returned (detached) losses are means over the batches. Under DDP only the last backward
        all-reduces the gradients."""
        totals: dict[str, torch.Tensor] = {}
        taken = 0
        for taken, batch in enumerate(islice(batches, num_batches), start=1):
            batch = batch.to(self.device, non_blocking=True)
            with self._gradient_sync(last=taken == num_batches):
                with autocast(self.device, self.amp):
                    losses = self._model_call()(batch.images, batch.image_sizes, batch.gt_boxes, batch.gt_labels)
                self.scaler.scale(sum(losses.values()) / num_batches).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0) + value.detach() / num_batches
        if taken != num_batches:
            raise RuntimeError(f"the training loader gave {taken} of the {num_batches} batches of an optimiser "
                               f"step: its length ({self.batches_per_epoch}) does not match what it yields")
        return totals

    def _gradient_sync(self, *, last: bool):
        """DDP's ``no_sync()`` (gradients stay local) except for the last batch of an optimiser step."""
        if last or not isinstance(self.model, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def _noting_skipped_images(self, loader) -> Iterator:
        """The loader's batches, logging the images it skipped on the way."""
        for batch in loader:
            self._note_skipped_images(batch.skipped_images)
            yield batch

    def _note_skipped_images(self, reasons: list[str]) -> None:
        """Log each image the loader skipped the first time it is skipped (every epoch skips it again)."""
        for reason in reasons:
            if reason not in self.skipped_images:
                self.skipped_images.add(reason)
                self.logger.event(f"image skipped (data.on_bad_image: skip; {len(self.skipped_images)} so far): "
                                  f"{reason}", iteration=self.iteration + 1)

    def _nan_guard(self, finite: bool, loss_value: float, grad_value: float) -> None:
        if finite:
            self.nan_streak = 0
            return
        self.nan_streak += 1
        self.logger.event(f"non-finite loss {loss_value} / grad norm {grad_value}: step skipped "
                          f"({self.nan_streak} in a row, limit train.max_nan_steps={self.max_nan_steps})",
                          iteration=self.iteration + 1)
        if self.nan_streak >= self.max_nan_steps:
            raise NonFiniteLossError(
                f"{self.nan_streak} consecutive iterations with a non-finite loss or gradient (last at iteration "
                f"{self.iteration + 1}); lower optimizer.lr, raise lr_schedule.warmup_iters, set train.grad_clip, or "
                f"check the data")

    # -- evaluation and checkpoints -------------------------------------------------------------------
    def _after_unit(self, count: int, *, final: bool) -> None:
        do_eval = self.evaluate is not None and (final or count % self.eval_interval == 0)
        do_save = final or (self.checkpoint_interval > 0 and count % self.checkpoint_interval == 0)
        is_best = False
        if do_eval:
            metrics = broadcast_object(self.evaluate(self.eval_model))
            self.model.train()
            score = metrics[self.best_metric]
            is_best = score > self.best_score
            self.best_score = max(score, self.best_score)
            self.logger.log_metrics(iteration=self.iteration, epoch=self.epoch, metrics=metrics)
        if not (do_save or is_best):
            return
        rng_states = all_gather_objects(capture_rng_state())  # every rank resumes its own random streams
        if is_main_process():
            unit = "epoch" if self.by_epoch else "iter"
            self.checkpointer.save(self.state_dict(rng_states),
                                   periodic_name=f"{unit}_{count}.pth" if do_save else None, is_best=is_best)

    def state_dict(self, rng_states: list[dict] | None = None) -> dict:
        """The whole training state; ``rng_states``: the generators of every rank, by rank (default: this
        process's only)."""
        return {
            "model": self.bare_model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "meta": {**self.meta, "iteration": self.iteration, "epoch": self.epoch, **self._layout(),
                     "iter_in_epoch": self.iter_in_epoch, "best_score": self.best_score,
                     "best_metric": self.best_metric},
            "rng": rng_states if rng_states is not None else [capture_rng_state()],
            "logger": self.logger.state_dict(),
        }

    def _layout(self) -> dict:
        """What the epoch position and the scaled LR depend on: processes, images per process, iterations per
        epoch."""
        return {"world_size": get_world_size(), "batch_size": self.train_loader.batch_sampler.batch_size,
                "accumulate": self.accumulate, "iters_per_epoch": self.iters_per_epoch}

    def _check_same_layout(self, meta: dict) -> None:
        """The epoch position, the sampler's skip and the scaled LR only line up with the same processes and
        batch layout: refuse to resume otherwise (a checkpoint without some of the numbers is checked on the
        others)."""
        current = self._layout()
        saved = {key: meta.get(key, 1 if key == "accumulate" else value) for key, value in current.items()}
        if saved != current:
            raise GfldetError(f"the checkpoint was trained with {_describe_layout(saved)}, this run has "
                              f"{_describe_layout(current)}: resume with the same number of processes, "
                              f"data.batch_size and train.accumulate, or start a new run from it with --load-from")

    def _check_schedule_reaches(self, meta: dict) -> None:
        """Refuse a schedule that ends before the checkpoint (it would train nothing and end a shorter run)."""
        if meta["iteration"] <= self.max_iters:
            return
        if self.by_epoch:
            setting = f"train.max_epochs={self.max_iters // self.iters_per_epoch}"
            needed = f"train.max_epochs >= {math.ceil(meta['iteration'] / self.iters_per_epoch)}"
        else:
            setting, needed = f"train.max_iters={self.max_iters}", f"train.max_iters >= {meta['iteration']}"
        raise GfldetError(f"{setting} ends before the checkpoint (epoch {meta['epoch']}, iteration "
                          f"{meta['iteration']}): resume with {needed}, or start a new run from it with --load-from")

    def load_state_dict(self, state: dict) -> None:
        """Resume: weights, optimiser, scheduler, scaler, EMA, counters, sampler position, RNG states and the
        logger's partial window. Checks come first: a refused checkpoint changes nothing."""
        self._check_same_layout(state["meta"])
        self._check_schedule_reaches(state["meta"])
        if self.ema is not None and state.get("ema") is None:
            raise GfldetError("train.ema is set but the checkpoint has no EMA weights; resume without EMA or "
                              "start from --load-from")
        self.bare_model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        # Keep the schedule of the current config (e.g. a longer max_epochs); restore only the position in it.
        scheduler_state = {**state["lr_scheduler"], "lr_lambdas": [None] * len(self.optimizer.param_groups)}
        self.lr_scheduler.load_state_dict(scheduler_state)
        if state["scaler"]:  # empty when the checkpoint was trained without fp16: keep the fresh scaler
            self.scaler.load_state_dict(state["scaler"])
        meta = state["meta"]
        self.iteration, self.epoch, self.iter_in_epoch = meta["iteration"], meta["epoch"], meta["iter_in_epoch"]
        self.best_score = meta["best_score"]
        restore_rng_state(state["rng"][get_rank()])
        self.logger.resume(self.iteration, state.get("logger"))
        self.logger.event(f"resumed at epoch {self.epoch}, iteration {self.iteration}", iteration=self.iteration)


def _describe_layout(layout: dict) -> str:
    """e.g. ``2 process(es) x 4 images x 2 accumulated batches (8 iterations per epoch)``."""
    return (f"{layout['world_size']} process(es) x {layout['batch_size']} images x {layout['accumulate']} "
            f"accumulated batch(es) ({layout['iters_per_epoch']} iterations per epoch)")
