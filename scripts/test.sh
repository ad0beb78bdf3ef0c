#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite:   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/install_parity_deps.sh ]; then
  # mmdetection 3.3 (pure-PyTorch parts) for the reference-parity tests; they skip if this step is unavailable.
  bash scripts/install_parity_deps.sh .venv || echo "[test] parity dependencies unavailable: parity tests will skip"
fi
exec .venv/bin/python -m pytest "$@"
