#!/usr/bin/env bash
# Install mmdetection 3.3 (pure-PyTorch parts) into a venv so that tests/parity/ runs instead of skipping.
#
#   bash scripts/install_parity_deps.sh [VENV]      # default VENV: .venv
#
# mmcv-lite has no compiled ops; tests/mmdet_compat.py registers a stub mmcv._ext so the heads, assigners and
# losses import. --no-deps keeps torch/torchvision untouched and avoids pulling opencv-python next to the
# opencv-python-headless that albumentations already brings (both ship cv2). Idempotent: does nothing when the
# pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "[parity-deps] no python at $PY: run scripts/setup.sh first (or pass the venv path)" >&2
  exit 1
fi
PINS="mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0"
if "$PY" - <<'PYEOF' >/dev/null 2>&1
from importlib.metadata import version
assert version("mmengine") == "0.10.7" and version("mmcv-lite") == "2.1.0" and version("mmdet") == "3.3.0"
import addict, rich, termcolor, yapf, shapely, six, terminaltables, scipy  # noqa: F401  (runtime imports)
PYEOF
then
  echo "[parity-deps] already installed: $PINS"
  exit 0
fi
echo "[parity-deps] installing $PINS into $VENV"
# shellcheck disable=SC2086
"$PY" -m pip install --quiet --no-deps $PINS
# the runtime dependencies of the three that `import mmdet.models` needs (opencv-python and torch excluded)
echo "[parity-deps] (pip may report that opencv-python is missing: expected, cv2 comes from opencv-python-headless)"
"$PY" -m pip install --quiet addict rich termcolor yapf packaging pillow matplotlib pyyaml shapely six terminaltables scipy
"$PY" -c "import mmengine, mmcv, mmdet; print(f'[parity-deps] mmdet {mmdet.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}')"
