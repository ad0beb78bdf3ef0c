"""Training and evaluation engine: optimiser and LR schedules, the Trainer loop, checkpoints, COCO evaluation,
distributed helpers and logging. The engine knows nothing about GFL: a model's forward returns a loss dict.

Entry points used by the CLI::

    from gfldet.engine.launch import train                        # gfldet train
    from gfldet.engine.testing import evaluate_checkpoint, infer_images   # gfldet test / gfldet infer
"""
from gfldet.engine.checkpointer import Checkpointer, atomic_save, load_checkpoint
from gfldet.engine.evaluator import CocoEvaluator, check_results_format, predictions_to_coco, write_submission
from gfldet.engine.optim import build_optimizer
from gfldet.engine.schedules import build_lr_scheduler
from gfldet.engine.trainer import NonFiniteLossError, Trainer

__all__ = ["Checkpointer", "atomic_save", "load_checkpoint", "CocoEvaluator", "check_results_format",
           "predictions_to_coco", "write_submission", "build_optimizer", "build_lr_scheduler", "NonFiniteLossError",
           "Trainer"]
