"""Fixtures of the data-layer tests (helpers live in data_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gfldet.data.synthetic import SynthSpec, generate_synthetic


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(SynthSpec(num_train=16, num_val=4, height=96, width=128, seed=3), out)
    return out
