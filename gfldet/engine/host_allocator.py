"""Host (CPU) memory allocator setting of training, evaluation and benchmarks on the CPU.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its mmap threshold
(dynamic, at most 32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` on free. A detector's activations
and their gradients are 10-150 MiB each at 800x1333, so every training step maps them again and the kernel
zero-fills each of their 4 KiB pages on first touch: on the 2-core benchmark machine that is about a sixth of an
R-50 training step at 2x800x1333, spent in the kernel (see ``docs/benchmarks.md``). Mode ``reuse`` turns the per-block
mmaps off and lets the heap keep up to 1 GiB of freed memory, so that the next step reuses pages already mapped.
jemalloc or tcmalloc would do the same through ``LD_PRELOAD``, but they are not Python packages and must be set
before the process starts; ``mallopt`` is glibc's documented run-time switch, reached here through ctypes because
no library wraps it. It changes the whole process: a benchmark that sets it times both contenders under it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

from gfldet.errors import GfldetError

__all__ = ["CPU_ALLOCATOR_MODES", "configure_cpu_allocator"]

CPU_ALLOCATOR_MODES = ("reuse", "system")

# glibc <malloc.h> parameter numbers and the values of mode "reuse".
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEEP_FREED_BYTES = 1 << 30


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def configure_cpu_allocator(mode: str) -> bool:
    """Apply ``mode`` (``reuse`` | ``system``) to this process; True when the allocator was changed.

    ``system`` leaves malloc as it is. ``reuse`` is a no-op (False) outside Linux/glibc. Calling it again is
    harmless; it does not undo an earlier ``reuse``.
    """
    if mode not in CPU_ALLOCATOR_MODES:
        raise GfldetError(f"cpu_allocator must be one of {', '.join(CPU_ALLOCATOR_MODES)}, got {mode!r}")
    libc = _glibc()
    if mode == "system" or libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES))
