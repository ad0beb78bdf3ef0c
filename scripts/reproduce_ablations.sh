#!/usr/bin/env bash
# Train and evaluate the GFL paper's ablation configs (configs/ablations/), then set our numbers beside the paper's.
#   bash scripts/reproduce_ablations.sh [--gpus N] [--tables 1a,2b] [--schedule short|1x] [--data bccd|coco]
#                                       [--work-root DIR] [--dry-run]
# Defaults: --gpus 1 --schedule 1x --data coco (the paper's setting: 8 GPUs x 2 images, R-50, 12 epochs).
# --schedule short --data bccd runs a CPU-sized version on BCCD (ResNet-18 from scratch,
# 320x240, 8 epochs; see configs/ablations/_base_/short_cpu.yaml; no SSD512 rows): it shows the machinery working, not
# the paper's numbers.
# Each config trains into WORK_ROOT/<schedule>_<data>/<config name>/ and is evaluated there (metrics.json); a work dir
# with metrics.json is skipped, one with latest.pth but no metrics.json resumes training from it (a no-op when the
# schedule had finished) and is then evaluated, so re-running after a crash continues. One config can fill rows of
# several tables (its `ablation` key lists them), so each model trains once. The report goes to
# WORK_ROOT/<schedule>_<data>/report/ (report.md, table_<key>.{md,csv}). Run several copies at once to use several
# cores: each claims a config through WORK_DIR.lock (remove stale locks after a crash).
set -euo pipefail
cd "$(dirname "$0")/.."

GPUS=1 TABLES="" SCHEDULE=1x DATA=coco WORK_ROOT=work_dirs/ablations DRY_RUN=0
usage() { sed -n '2,4p' "$0" | sed 's/^# //' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) GPUS=$2; shift 2 ;;
    --tables) TABLES=$2; shift 2 ;;
    --schedule) SCHEDULE=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --work-root) WORK_ROOT=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage ;;
    *) echo "reproduce_ablations: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$SCHEDULE" in short|1x) ;; *) echo "reproduce_ablations: --schedule must be short or 1x, got '$SCHEDULE'" >&2; exit 2 ;; esac
case "$DATA" in bccd|coco) ;; *) echo "reproduce_ablations: --data must be bccd or coco, got '$DATA'" >&2; exit 2 ;; esac
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || { echo "reproduce_ablations: --gpus must be a positive integer, got '$GPUS'" >&2; exit 2; }

PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
GFLDET=("$PYTHON" -m gfldet.cli)
REPO=$(pwd)
RUN_ROOT="$WORK_ROOT/${SCHEDULE}_${DATA}"
run() { echo "+ $*"; [ "$DRY_RUN" = 1 ] || "$@"; }

prepare_bccd() {
  [ -f data/bccd/val.json ] && [ -e data/BCCD ] && return
  local src="${GFLDET_BCCD:-$REPO/../shared/datasets/BCCD}"
  [ -d "$src/Annotations" ] || { echo "reproduce_ablations: BCCD not found at $src (set GFLDET_BCCD)" >&2; exit 1; }
  mkdir -p data
  [ -e data/BCCD ] || run ln -s "$(cd "$src" && pwd)" data/BCCD
  local splits=()
  for split in train val test; do splits+=(--split "$split=data/BCCD/ImageSets/Main/$split.txt"); done
  run "${GFLDET[@]}" data voc2coco --ann-dir data/BCCD/Annotations --img-dir data/BCCD/JPEGImages --out data/bccd "${splits[@]}"
}

# The run config: the ablation config, plus the dataset / schedule overlays (later files win).
write_run_config() {  # CONFIG WORK_DIR -> path of the config to train
  local config=$1 work_dir=$2 overlays=()
  [ "$DATA" = bccd ] && overlays+=("$REPO/configs/ablations/_base_/bccd_data.yaml")
  [ "$SCHEDULE" = short ] && overlays+=("$REPO/configs/ablations/_base_/short_cpu.yaml")
  if [ ${#overlays[@]} -eq 0 ]; then echo "$config"; return; fi
  mkdir -p "$work_dir"
  { echo "# written by scripts/reproduce_ablations.sh"; echo "_base_:"; echo "  - $REPO/$config"
    for overlay in "${overlays[@]}"; do echo "  - $overlay"; done; } > "$work_dir/run.yaml"
  echo "$work_dir/run.yaml"
}

train() {  # CONFIG WORK_DIR: train, or resume from WORK_DIR/latest.pth when there is one
  local args=(--work-dir "$2")
  [ -f "$2/latest.pth" ] && args+=(--resume)
  if [ "$GPUS" -gt 1 ]; then
    run bash scripts/dist_train.sh "$1" "$GPUS" "${args[@]}"
  else
    run "${GFLDET[@]}" train "$1" "${args[@]}"
  fi
}

[ "$DATA" = bccd ] && prepare_bccd
# --schedule short shrinks ResNet-FPN models (configs/ablations/_base_/short_cpu.yaml); the SSD512 rows need the
# full VGG-16, which has no BatchNorm and does not learn from scratch in a CPU-sized schedule: they are left out.
mapfile -t CONFIGS < <("$PYTHON" -c '
import sys
from gfldet.config import load_config
from gfldet.engine.report import configs_for_tables
tables = [t for t in sys.argv[2].split(",") if t]
for path in configs_for_tables(sorted(sys.argv[3:]), tables):
    if sys.argv[1] == "short" and load_config(path).model.backbone.type == "ssd_vgg":
        print(f"[ablations] {path.stem}: no CPU-sized version of SSD512 (VGG-16 from scratch), skipped", file=sys.stderr)
    else:
        print(path)
' "$SCHEDULE" "$TABLES" configs/ablations/*.yaml)
[ ${#CONFIGS[@]} -gt 0 ] || { echo "reproduce_ablations: no config serves tables '$TABLES'" >&2; exit 1; }
echo "[ablations] ${#CONFIGS[@]} configs -> $RUN_ROOT (schedule $SCHEDULE, data $DATA, $GPUS GPU(s))"

WORK_DIRS=()
for config in "${CONFIGS[@]}"; do
  name=$(basename "$config" .yaml)
  work_dir="$RUN_ROOT/$name"
  WORK_DIRS+=("$work_dir")
  if [ -f "$work_dir/metrics.json" ]; then
    echo "[ablations] $name: done (metrics.json present), skipped"
    continue
  fi
  # Several runners (e.g. one per core or machine, over a shared disk) may work through the same list: a runner
  # claims a config by creating its lock directory and skips configs another runner has claimed.
  mkdir -p "$RUN_ROOT"
  if [ "$DRY_RUN" = 0 ] && ! mkdir "$work_dir.lock" 2>/dev/null; then
    echo "[ablations] $name: claimed by another runner ($work_dir.lock), skipped"
    continue
  fi
  run_config=$(write_run_config "$config" "$work_dir")
  echo "[ablations] $name: training"
  train "$run_config" "$work_dir"
  echo "[ablations] $name: evaluating"
  run "${GFLDET[@]}" test "$run_config" "$work_dir/latest.pth" --work-dir "$work_dir"
  [ "$DRY_RUN" = 1 ] || rmdir "$work_dir.lock"
done

TABLE_ARGS=()
[ -n "$TABLES" ] && TABLE_ARGS=(--tables "$TABLES")
run "${GFLDET[@]}" report "${WORK_DIRS[@]}" --out "$RUN_ROOT/report" "${TABLE_ARGS[@]}"
