"""Small tensors made from host (Python) values, put on the device without making the host wait for it.

``torch.tensor(values, device="cuda")`` copies with ``non_blocking=False``, which synchronises the stream: the
host waits until every kernel queued so far has run, so on a GPU the launch queue drains and the GPU idles while
the host queues the next kernels. A non-blocking copy from pageable memory is staged by the driver at once (CUDA's
documented behaviour for host-to-device copies) and ordered on the stream, so nothing waits and the CPU tensor may
be freed right after. Hand-written because torch has no factory for it.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["host_tensor", "to_device_async"]


def host_tensor(data: Any, *, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.tensor(data, dtype=dtype)`` on ``device``, copied without a host-device synchronisation."""
    return to_device_async(torch.tensor(data, dtype=dtype), device)


def to_device_async(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU ``tensor`` (built on the host) on ``device``, copied without a host-device synchronisation."""
    return tensor.to(device, non_blocking=True) if torch.device(device).type != "cpu" else tensor
