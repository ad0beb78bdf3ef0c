"""Every benchmark script runs end to end with ``--quick`` (tiny sizes, one round): a smoke test of the scripts,
not a measurement. Each runs as a user runs it, in its own process from the repository root."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bccd import bccd_root

REPO = Path(__file__).resolve().parents[2]

# script -> what its output must contain (the figures' table or lines)
COMPARISONS = {
    "bench_infer_vs_torchvision.py": "| torchvision FCOS |",
    "bench_train_vs_torchvision.py": "| torchvision FCOS |",
    "bench_eval_backends.py": "identical",
    "bench_vs_mmdet.py": "| mmdetection GFL |",
}
# script -> extra arguments: gfldet's training step with Winograd convolutions whatever ``auto`` picks here
EXTRA_ARGUMENTS = {"bench_train_vs_torchvision.py": ("--also-winograd",)}


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", COMPARISONS)
def test_comparison_script_writes_its_snippet(script, tmp_path):
    if script == "bench_vs_mmdet.py" and importlib.util.find_spec("mmdet") is None:
        pytest.skip("mmdetection not installed (bash scripts/install_parity_deps.sh)")
    snippet = tmp_path / "snippet.md"
    out = _run(script, "--threads", "1", "--md", str(snippet), *EXTRA_ARGUMENTS.get(script, ()))
    text = snippet.read_text()
    assert text.startswith("### ") and "- command: `python benchmarks/" in text and "- machine:" in text
    assert COMPARISONS[script] in text and COMPARISONS[script] in out
    if "--also-winograd" in EXTRA_ARGUMENTS.get(script, ()):  # one row per table, like every contender
        assert text.count("| gfldet (NCHW, Winograd) |") == text.count(COMPARISONS[script]) > 0
        assert text.count("| gfldet (NCHW, direct) |") == text.count(COMPARISONS[script])


def test_assignment_script_checks_both_paths_agree():
    assert "(identical assignment: True)" in _run("bench_assign.py")


def test_loader_script_times_both_pipelines():
    out = _run("bench_loader.py", "--bccd", str(bccd_root()))
    assert "gfldet (cv2 + albumentations)" in out and "torchvision CocoDetection + v2" in out


def test_accumulation_script_compares_both_gradients():
    out = _run("accumulation_vs_batch.py", "--bccd", str(bccd_root()))
    assert "one batch of 2 image(s) vs 2 accumulated batch(es) of 1" in out and "median over 1 batch(es): cosine" in out
