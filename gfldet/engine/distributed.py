"""Process-group helpers for torchrun launches (NCCL on GPU, gloo on CPU).

Every helper degrades to the single-process answer when torch.distributed is not initialised, so the trainer and the
evaluator call them unconditionally.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "init_distributed", "is_distributed", "get_rank", "get_world_size", "is_main_process",
    "all_gather_objects", "broadcast_object", "convert_sync_batchnorm", "cleanup_distributed", "distributed_scope",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device_type: str, *, timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group described by torchrun's environment and return this process's device.

    Without ``WORLD_SIZE`` > 1 in the environment nothing is initialised. On CUDA each process takes GPU ``LOCAL_RANK``
    and talks NCCL; on CPU the backend is gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device(device_type)
    if world_size > 1 and not is_distributed():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes),
                                device_id=device if device_type == "cuda" else None)
    return device


def cleanup_distributed(*, wait_for_peers: bool = True) -> None:
    """Leave the process group (no-op outside one).

    Drop every reference to DistributedDataParallel wrappers first: a wrapper that outlives the group (DDP sits in
    a reference cycle, so only the garbage collector frees it) makes gloo abort the process at exit, now and then
    ("terminate called without an active exception", SIGABRT). ``wait_for_peers`` first waits until every rank is
    here, so that no rank closes its connections while a peer still uses them; pass False on an error path, where
    the peers may never come.
    """
    if not is_distributed():
        return
    gc.collect()
    if wait_for_peers:
        dist.barrier()
    dist.destroy_process_group()


@contextlib.contextmanager
def distributed_scope():
    """Leave the process group, if one is joined by then, when the block (or decorated function) ends: after the
    other ranks on success, at once on an exception. ``gfldet train`` / ``gfldet test`` run inside one, so ranks
    that finish early (those that do not write the evaluation) wait for rank 0 before leaving."""
    try:
        yield
    except BaseException:
        cleanup_distributed(wait_for_peers=False)
        raise
    cleanup_distributed()


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one picklable object from every rank; returns the list ordered by rank (on every rank)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """Send ``obj`` from rank ``src`` to every rank and return it."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace trainable BatchNorm layers by SyncBatchNorm (frozen BN / FrozenBatchNorm2d are left alone)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
