import platform
import subprocess
import sys
import textwrap

import pytest

from gfldet.config import Config, ConfigError
from gfldet.engine.host_allocator import configure_cpu_allocator
from gfldet.engine.launch import setup_device
from gfldet.errors import GfldetError

# Page faults of each of 10 rounds that fill and free a 64 MiB tensor (16384 pages of 4 KiB): training steps in small.
FAULTS_PER_ROUND = textwrap.dedent("""
    import resource, sys, torch
    from gfldet.engine.host_allocator import configure_cpu_allocator
    print(configure_cpu_allocator(sys.argv[1]))
    def fill_and_free():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(16 << 20).fill_(1.0)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(*[fill_and_free() for _ in range(10)])
""")


def _fewest_faults(mode: str) -> tuple[bool, int]:
    """(allocator changed, the fewest page faults of a round)."""
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND, mode], check=True, capture_output=True,
                         text=True, timeout=120).stdout.split()
    return out[0] == "True", min(int(x) for x in out[1:])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_reuse_keeps_freed_activation_memory_mapped():
    changed, faults_reused = _fewest_faults("reuse")
    unchanged, faults_system = _fewest_faults("system")
    assert changed and not unchanged
    assert faults_system > 16000  # glibc maps a fresh block (zero-filled pages) for every large tensor
    assert faults_reused < 500  # rounds reuse the freed block, its pages already mapped (most rounds: 0 faults)


def test_unknown_mode_is_rejected():
    with pytest.raises(GfldetError, match="reuse, system"):
        configure_cpu_allocator("jemalloc")
    with pytest.raises(ConfigError, match="train.cpu_allocator must be one of reuse, system"):
        setup_device(Config({"device": "cpu", "cpu_allocator": "fast"}))
