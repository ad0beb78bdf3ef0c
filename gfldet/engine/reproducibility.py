"""Seeds and deterministic mode."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything", "set_deterministic"]


def seed_everything(seed: int, *, rank: int = 0) -> None:
    """Seed python, numpy and torch (all devices). Each rank gets ``seed + rank`` so that ranks draw different
    random augmentations while the model initialisation stays identical (DDP broadcasts rank 0's weights anyway)."""
    value = seed + rank
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def set_deterministic(enabled: bool) -> None:
    """Make kernels deterministic (``train.deterministic``): same seed + same data order -> same losses.

    Sets ``torch.use_deterministic_algorithms`` (``warn_only``: CUDA ops without a deterministic kernel, e.g. some
    ``index_put`` with accumulation, warn instead of stopping the run), disables cuDNN autotuning and fixes the
    cuBLAS workspace. Off: cuDNN benchmark mode is on for speed.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
