"""Where the tests find BCCD (read-only Pascal VOC): GFLDET_BCCD, else ../shared/datasets/BCCD beside the repo.

A test that needs it skips when it is absent, and fails instead under CI (CI=true), where it must be present.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bccd_root() -> Path:
    """The BCCD folder (with Annotations/, JPEGImages/, ImageSets/); skip (or fail under CI) when absent."""
    root = Path(os.environ.get("GFLDET_BCCD", REPO.parent / "shared" / "datasets" / "BCCD"))
    if (root / "Annotations").is_dir():
        return root
    if os.environ.get("CI") == "true":
        pytest.fail(f"BCCD not found at {root} but CI=true requires it")
    pytest.skip(f"BCCD not found at {root} (set GFLDET_BCCD)")
