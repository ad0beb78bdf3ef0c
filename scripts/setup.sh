#!/usr/bin/env bash
# Create .venv and install gfldet with its test extras. Idempotent: a second run only re-installs gfldet.
#
#   bash scripts/setup.sh            # CPU machine like the CI one
#   GFLDET_TORCH_SPEC="torch torchvision" bash scripts/setup.sh   # let pip pick torch for your machine
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${GFLDET_VENV:-.venv}"
EXTRAS="${GFLDET_EXTRAS:-dev,fast}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PY="$VENV/bin/python"

# The torch pair is chosen per machine. On x86_64 Python 3.11 machines like ours, torch 2.14.1 +
# torchvision 0.29.1 are the pair that import together; elsewhere let pip choose (override with
# GFLDET_TORCH_SPEC). gfldet itself only requires torch>=2.1.
if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  if [ -z "${GFLDET_TORCH_SPEC:-}" ]; then
    if [ "$(uname -m)" = "x86_64" ] && "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      GFLDET_TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
    else
      GFLDET_TORCH_SPEC="torch torchvision"
    fi
  fi
  echo "[setup] installing $GFLDET_TORCH_SPEC"
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet $GFLDET_TORCH_SPEC
fi

echo "[setup] installing gfldet[$EXTRAS]"
"$PY" -m pip install --quiet -e ".[$EXTRAS]"
"$PY" -c "import gfldet, torch, torchvision; print(f'[setup] gfldet ready: torch {torch.__version__}, torchvision {torchvision.__version__}')"
