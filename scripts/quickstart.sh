#!/usr/bin/env bash
# From a fresh clone to a trained detector on the CPU, without downloading anything but pip packages:
#   1. set up .venv (scripts/setup.sh)            2. generate the synthetic shapes dataset
#   3. train a small GFL detector (ResNet-18)      4. evaluate it (COCO AP table)
#   5. draw its detections on a few val images into work_dirs/quickstart/vis/
# Usage: bash scripts/quickstart.sh   (env: GFLDET_SKIP_SETUP=1 to reuse an existing .venv)
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=configs/quickstart/gfl_r18_synthetic.yaml
WORK_DIR=work_dirs/quickstart
DATA_DIR=data/synthetic
start=$(date +%s)

if [ "${GFLDET_SKIP_SETUP:-0}" != "1" ]; then
  bash scripts/setup.sh
fi
GFLDET=".venv/bin/gfldet"

if [ ! -f "$DATA_DIR/val.json" ]; then
  echo "[quickstart] generating the synthetic dataset into $DATA_DIR"
  "$GFLDET" data synth --out "$DATA_DIR"
fi

if [ -d "$WORK_DIR" ]; then  # a demo: start over (gfldet train itself refuses to overwrite a run)
  echo "[quickstart] removing the previous quickstart run in $WORK_DIR"
  rm -rf "$WORK_DIR"
fi
echo "[quickstart] training $CONFIG on the CPU (work dir $WORK_DIR)"
"$GFLDET" train "$CONFIG" --work-dir "$WORK_DIR"

echo "[quickstart] evaluating $WORK_DIR/latest.pth on the synthetic val split"
"$GFLDET" test "$CONFIG" "$WORK_DIR/latest.pth" --work-dir "$WORK_DIR"

echo "[quickstart] drawing detections into $WORK_DIR/vis/"
mapfile -t IMAGES < <(ls "$DATA_DIR"/images/val_*.jpg | head -n 6)
"$GFLDET" infer "$CONFIG" "$WORK_DIR/latest.pth" "${IMAGES[@]}" --out "$WORK_DIR/vis" --score-thr 0.3

echo "[quickstart] done in $(( $(date +%s) - start )) s: metrics in $WORK_DIR/metrics.json, pictures in $WORK_DIR/vis/"
