"""From a merged config to a running Trainer (what ``gfldet train`` and ``torchrun tools/train.py`` do).

Config section ``train`` (defaults in ``configs/_base_/default_runtime.yaml`` and ``configs/_base_/schedules/``):
exactly one of ``max_epochs`` / ``max_iters``; ``eval_interval`` and ``checkpoint_interval`` in that unit;
``seed``, ``deterministic``, ``amp`` (off|fp16|bf16), ``channels_last`` and ``winograd`` (auto|true|false, see
``conv_kernels.py``; ``winograd`` optional), ``grad_clip`` (max L2 norm or null), ``ema`` (decay or null),
``keep_last``, ``log_interval``, ``max_nan_steps``, ``lr_schedule`` (see ``schedules.py``), ``sync_bn``,
``find_unused_parameters``, ``device`` (auto|cpu|cuda), ``tensorboard``, ``cpu_allocator`` (reuse|system,
optional, see ``host_allocator.py``), ``compile`` (false|true|a ``torch.compile`` mode, optional). Section
``evaluation``: ``backend``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from gfldet.config import Config, ConfigError, check_keys, dump_config
from gfldet.engine.amp import AMP_MODES
from gfldet.engine.checkpointer import Checkpointer, load_model_weights, load_training_checkpoint
from gfldet.engine.conv_kernels import (check_conv_settings, chosen_conv_kernels, describe_conv_kernels,
                                        prepare_for_training)
from gfldet.engine.distributed import (convert_sync_batchnorm, distributed_scope, get_rank, get_world_size,
                                       init_distributed, is_main_process)
from gfldet.engine.evaluator import CocoEvaluator, format_ap_table, predictions_to_coco
from gfldet.engine.host_allocator import CPU_ALLOCATOR_MODES, configure_cpu_allocator
from gfldet.engine.inference import evaluated_image_ids, run_inference
from gfldet.engine.logging import LOG_FILE, TENSORBOARD_DIR, TrainLogger
from gfldet.engine.optim import build_optimizer, check_optimizer
from gfldet.engine.reproducibility import seed_everything, set_deterministic
from gfldet.engine.schedules import build_lr_scheduler, check_lr_schedule
from gfldet.engine.trainer import Trainer, steps_per_epoch

__all__ = ["check_sections", "check_train_section", "CONFIG_SECTIONS", "TRAIN_KEYS", "EVALUATION_KEYS",
           "COMPILE_MODES", "compile_mode", "resolve_device", "setup_device", "schedule_length", "describe_step",
           "run_traces", "build_evaluate_fn", "train"]

TRAIN_KEYS = ("max_epochs", "max_iters", "eval_interval", "checkpoint_interval", "seed", "deterministic", "amp",
              "channels_last", "grad_clip", "ema", "keep_last", "log_interval", "max_nan_steps", "lr_schedule",
              "sync_bn", "find_unused_parameters", "device", "tensorboard", "cpu_allocator", "compile", "winograd",
              "accumulate")
OPTIONAL_TRAIN_KEYS = ("max_epochs", "max_iters", "cpu_allocator", "compile", "winograd", "accumulate")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
EVALUATION_KEYS = ("backend",)
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, *, setting: str = "train.device") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``setting`` names the option in errors."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in DEVICES:
        raise ConfigError(f"{setting} must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting} is cuda but no GPU is visible; use cpu (or auto)")
    return name


def setup_device(train_cfg: Config, *, distributed: bool = True) -> torch.device:
    """The device of ``train.device`` (``distributed``: the process group joined under torchrun); on the CPU the
    allocator mode of ``train.cpu_allocator`` (default ``reuse``) is applied to the process."""
    allocator = train_cfg.get("cpu_allocator", "reuse")
    if allocator not in CPU_ALLOCATOR_MODES:
        raise ConfigError(f"{train_cfg.where('cpu_allocator')}: train.cpu_allocator must be one of "
                          f"{', '.join(CPU_ALLOCATOR_MODES)}, got {allocator!r}")
    name = resolve_device(train_cfg.device, setting=train_cfg.where("device"))
    device = init_distributed(name) if distributed else torch.device(name)
    if device.type == "cpu":
        configure_cpu_allocator(allocator)
    return device


def compile_mode(train_cfg: Config) -> str | None:
    """The ``torch.compile`` mode of ``train.compile`` (optional, default false): None (eager), ``true`` ->
    ``default``, or one of :data:`COMPILE_MODES`."""
    value = train_cfg.get("compile", False)
    if value is False or value is None:
        return None
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        raise ConfigError(f"{train_cfg.where('compile')}: train.compile must be false, true or one of "
                          f"{', '.join(COMPILE_MODES)}, got {value!r}")
    return value


def schedule_length(train_cfg: Config, iters_per_epoch: int) -> tuple[int, bool]:
    """(max_iters, by_epoch) from exactly one of ``train.max_epochs`` / ``train.max_iters``."""
    epochs, iters = train_cfg.get("max_epochs"), train_cfg.get("max_iters")
    if (epochs is None) == (iters is None):
        fix = "set one of them" if epochs is None else "set the other to null"
        raise ConfigError(f"set exactly one of train.max_epochs and train.max_iters, got "
                          f"{_setting(train_cfg, 'max_epochs')} and {_setting(train_cfg, 'max_iters')}: {fix}")
    if iters_per_epoch <= 0:
        raise ConfigError("the training loader is empty: check data.train (annotation file, batch size)")
    return (int(epochs) * iters_per_epoch, True) if epochs is not None else (int(iters), False)


def _setting(section: Config, key: str) -> str:
    """``file:line (dotted.key) = value``: a value and where it was set, for errors about several keys."""
    if key not in section:
        return f"{section.dotted(key)} unset"
    return f"{section.where(key)} = {'null' if section[key] is None else section[key]}"


def describe_step(cfg: Config, optimizer: torch.optim.Optimizer, *, batch_size: int, iters_per_epoch: int,
                  max_iters: int) -> str:
    """One line for the log: the images of an optimiser step, the learning rate the optimiser was built with for
    them (its first group's, before warm-up), the schedule's length, e.g. ``16 images per optimiser step (2
    process(es) x 2 images x 4 accumulated batch(es)); optimizer.lr 0.01 for 16 images -> 0.01; 7330 steps per
    epoch, 87960 in all``."""
    ocfg, accumulate, world_size = cfg.optimizer, cfg.train.accumulate, get_world_size()
    total = world_size * batch_size * accumulate
    lr = optimizer.param_groups[0]["initial_lr"]
    scaling = (f"optimizer.lr {ocfg.get_float('lr'):g} for {ocfg.base_batch_size} images -> {lr:g}"
               if ocfg.auto_scale_lr else f"optimizer.lr {lr:g} (auto_scale_lr off)")
    return (f"{total} images per optimiser step ({world_size} process(es) x {batch_size} images x {accumulate} "
            f"accumulated batch(es)); {scaling}; {iters_per_epoch} steps per epoch, {max_iters} in all")


def run_traces(work_dir: str | Path) -> list[str]:
    """What a training run leaves in ``work_dir``: checkpoints (``*.pth``), ``log.jsonl``, TensorBoard events."""
    work_dir = Path(work_dir)
    traces = sorted(path.name for path in work_dir.glob("*.pth"))
    if (work_dir / LOG_FILE).is_file():
        traces.append(LOG_FILE)
    if any((work_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*")):
        traces.append(f"{TENSORBOARD_DIR}/ events")
    return traces


def build_evaluate_fn(cfg: Config, *, device: torch.device, amp: str, split: str = "val",
                      show_images: Callable[[list], None] | None = None, num_images: int = 4):
    """A closure ``evaluate(model) -> metrics`` over the ``split`` loader (distributed when launched so).

    ``show_images``, when given, receives (image id, RGB uint8 picture) pairs of the first ``num_images`` images
    with their ground truth and detections drawn (e.g. ``TrainLogger.log_images`` for TensorBoard).
    """
    from gfldet.data import build_dataloader

    check_keys(cfg.evaluation, EVALUATION_KEYS, where="evaluation")
    loader = build_dataloader(cfg.data, split, distributed=get_world_size() > 1)
    dataset = loader.dataset
    evaluator = CocoEvaluator(coco_gt=dataset.coco, cat_ids=dataset.cat_ids, class_names=dataset.class_names,
                              backend=cfg.evaluation.backend)

    def evaluate(model: torch.nn.Module) -> dict:
        predictions = run_inference(model, loader, device=device, amp=amp, desc=f"eval {split}")
        if not is_main_process():
            return {}
        metrics, summary = evaluator.evaluate(predictions_to_coco(predictions, dataset.cat_ids),
                                              evaluated_image_ids(predictions, dataset.image_ids))
        print(summary + format_ap_table(metrics), flush=True)
        if show_images is not None:
            from gfldet.analysis import prediction_images

            show_images(prediction_images(model, loader, indices=range(min(num_images, len(dataset))), device=device))
        return metrics

    return evaluate


# Top-level sections of an experiment config; `ablation` only labels a run for `gfldet report`.
CONFIG_SECTIONS = ("model", "data", "optimizer", "train", "evaluation", "ablation")


def check_sections(cfg: Config) -> None:
    """A misspelt top-level section (e.g. ``trian:``) would silently keep every default: make it an error."""
    check_keys(cfg, CONFIG_SECTIONS, where="the config's top level")


def check_train_section(cfg: Config) -> Config:
    """Validate ``cfg.train`` up front (before data and model are built): unknown keys (typos), missing keys and
    values of the wrong type or range are ConfigErrors naming file, line and key. An unquoted ``amp: off`` (YAML
    1.1 reads it as false) becomes ``"off"``."""
    tcfg = cfg.train
    check_keys(tcfg, TRAIN_KEYS, where="train")
    missing = [key for key in TRAIN_KEYS if key not in tcfg and key not in OPTIONAL_TRAIN_KEYS]
    if missing:
        raise ConfigError(f"{tcfg.where()}: train section is missing {', '.join(missing)} (defaults live in "
                          f"configs/_base_/default_runtime.yaml; inherit it through _base_)")
    for key in ("max_epochs", "max_iters"):
        if key in tcfg:
            tcfg.get_int(key, low=1, optional=True)
    for key in ("eval_interval", "checkpoint_interval", "seed", "keep_last"):
        tcfg.get_int(key, low=0)
    for key in ("log_interval", "max_nan_steps"):
        tcfg.get_int(key, low=1)
    tcfg.accumulate = tcfg.get_int("accumulate", low=1) if "accumulate" in tcfg else 1
    for key in ("deterministic", "sync_bn", "find_unused_parameters", "tensorboard"):
        tcfg.get_bool(key)
    if tcfg.amp is False:
        tcfg.amp = "off"
    tcfg.get_choice("amp", AMP_MODES)
    tcfg.get_choice("device", DEVICES)
    tcfg.grad_clip = tcfg.get_float("grad_clip", positive=True, optional=True)
    tcfg.ema = tcfg.get_float("ema", low=0, high=1, optional=True)
    check_lr_schedule(tcfg.lr_schedule)
    compile_mode(tcfg)
    check_conv_settings(tcfg)
    return tcfg


def _build_model(cfg: Config, *, device: torch.device, load_from: str | Path | None) -> torch.nn.Module:
    """The detector on ``device``: optional warm-start weights, SyncBN and DDP when launched distributed."""
    from gfldet.models import build_detector

    model = build_detector(cfg.model)
    if load_from is not None:
        load_model_weights(model, load_from, strict=False)
    if cfg.train.sync_bn and get_world_size() > 1:
        model = convert_sync_batchnorm(model)
    # the convolution kernels that are the fast ones on this machine (conv_kernels.py)
    return prepare_for_training(model.to(device), **chosen_conv_kernels(cfg.train, device))


@distributed_scope()
def train(cfg: Config, *, work_dir: str | Path, resume: str | Path | None = None,
          load_from: str | Path | None = None) -> Trainer:
    """Train the detector of ``cfg``; ``resume`` restores the full state, ``load_from`` only model weights.

    Nothing is written to ``work_dir`` before the configuration and the resumed checkpoint have been checked.
    """
    from gfldet.data import build_dataloader, fill_num_classes

    check_sections(cfg)
    tcfg = check_train_section(cfg)
    check_optimizer(cfg.optimizer)
    resumed = load_training_checkpoint(resume) if resume is not None else None
    device = setup_device(tcfg)
    world_size, work_dir = get_world_size(), Path(work_dir)
    seed_everything(tcfg.seed, rank=get_rank())
    set_deterministic(tcfg.deterministic)
    train_loader = build_dataloader(cfg.data, "train", distributed=world_size > 1, seed=tcfg.seed)
    dataset = train_loader.dataset
    fill_num_classes(cfg, dataset=dataset)
    model = _build_model(cfg, device=device, load_from=load_from)
    optimizer = build_optimizer(model, cfg.optimizer,
                                total_batch_size=world_size * train_loader.batch_sampler.batch_size * tcfg.accumulate)
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=tcfg.find_unused_parameters)
    if tcfg.accumulate > len(train_loader):
        raise ConfigError(f"{tcfg.where('accumulate')}: train.accumulate = {tcfg.accumulate} but an epoch has only "
                          f"{len(train_loader)} batch(es) per process: no step could take {tcfg.accumulate} "
                          f"(lower train.accumulate or data.batch_size)")
    iters_per_epoch = steps_per_epoch(len(train_loader), tcfg.accumulate)
    max_iters, by_epoch = schedule_length(tcfg, iters_per_epoch)
    logger = TrainLogger(work_dir=work_dir, enabled=is_main_process(), max_iters=max_iters,
                         log_interval=tcfg.log_interval, tensorboard=tcfg.tensorboard)
    evaluate = (build_evaluate_fn(cfg, device=device, amp=tcfg.amp, show_images=logger.log_images)
                if tcfg.eval_interval else None)
    trainer = Trainer(
        model=model, optimizer=optimizer, train_loader=train_loader, device=device,
        lr_scheduler=build_lr_scheduler(optimizer, tcfg.lr_schedule, iters_per_epoch=iters_per_epoch,
                                        max_iters=max_iters),
        max_iters=max_iters, accumulate=tcfg.accumulate, by_epoch=by_epoch,
        eval_interval=tcfg.eval_interval, checkpoint_interval=tcfg.checkpoint_interval,
        evaluate=evaluate,
        amp=tcfg.amp, grad_clip=tcfg.grad_clip, ema_decay=tcfg.ema, max_nan_steps=tcfg.max_nan_steps,
        compile_mode=compile_mode(tcfg),
        checkpointer=Checkpointer(work_dir=work_dir, keep_last=tcfg.keep_last),
        logger=logger,
        meta={"config": cfg.to_dict(), "class_names": list(dataset.class_names), "cat_ids": list(dataset.cat_ids)},
    )
    if resumed is not None:  # checked before anything is written: a refused resume leaves the work dir as it was
        trainer.load_state_dict(resumed)
    logger.event(describe_step(cfg, optimizer, batch_size=train_loader.batch_sampler.batch_size,
                               iters_per_epoch=iters_per_epoch, max_iters=max_iters), iteration=trainer.iteration)
    logger.event(describe_conv_kernels(tcfg, device), iteration=trainer.iteration)
    if is_main_process():
        work_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, work_dir / "config.yaml")
    trainer.train()
    return trainer
