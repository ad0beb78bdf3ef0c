#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one go (a few minutes on an H100/H200), on one CUDA device:
#   1. inference vs torchvision FCOS, R-50-FPN 800x1333 batch 1, fp32 and fp16 autocast (FPS, memory)
#   2. training step vs torchvision FCOS, batch 2 800x1333, fp32 / fp16 / bf16 (it/s, memory)
#   3. batched ATSS vs the per-image loop, batch 16
#   4. `gfldet benchmark` of the R-50 1x config (train batch 2 fp16, infer batch 1 fp32): stage split, profile
#      (how busy the GPU is), host-GPU synchronisations; and the tests that count those synchronisations
#   5. the quickstart trained on the GPU with fp16 AMP (the trainer, loader and evaluator end to end)
#   6. `gfldet benchmark --compile` of the R-50 1x config, train batch 2 fp16 (train.compile's forward and loss) and
#      infer batch 1 fp32: compare with step 4 (compilation takes a few minutes)
# Markdown snippets and one log per step land in OUT_DIR; a failed step is reported and the others still run.
# Usage: bash benchmarks/gpu_suite.sh OUT_DIR [PART...]
#   PARTS: infer train assign benchmark quickstart compile (default: all, in that order)
#   env PYTHON: interpreter, default .venv/bin/python or python3
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR [infer|train|assign|benchmark|quickstart|compile ...]}
shift
if [ $# -gt 0 ]; then parts=("$@"); else parts=(infer train assign benchmark quickstart compile); fi
for part in "${parts[@]}"; do
  case $part in infer|train|assign|benchmark|quickstart|compile) ;; *) echo "unknown part: $part" >&2; exit 2;; esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=0

step() {  # step NAME COMMAND...: run COMMAND, output to OUT_DIR/NAME.log; say how long it took
  local name=$1 start=$SECONDS
  shift
  echo "== $name: $*"
  if "$@" >"$out/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - start)) s"
  else
    echo "   FAILED (exit $?) after $((SECONDS - start)) s; end of $name.log:"
    tail -n 25 "$out/$name.log"
    failed=1
  fi
}

infer() {
  step infer "$PYTHON" benchmarks/bench_infer_vs_torchvision.py --device cuda --amp off fp16 --runs 50 --warmup 10 \
    --md "$out/infer_vs_torchvision_cuda.md"
}

train() {
  step train "$PYTHON" benchmarks/bench_train_vs_torchvision.py --device cuda --sizes 2x800x1333 --amp off fp16 bf16 \
    --runs 30 --warmup 10 --md "$out/train_vs_torchvision_cuda.md"
}

assign() {
  step assign "$PYTHON" benchmarks/bench_assign.py --device cuda --runs 31
}

benchmark() {
  local command=("$PYTHON" -m gfldet.cli benchmark configs/gfl/gfl_r50_fpn_1x_coco.yaml --device cuda --runs 30
                 --warmup 10 --profile --find-syncs)
  step benchmark_train "${command[@]}" --mode train --amp fp16 --batch 2
  step benchmark_infer "${command[@]}" --mode infer --amp off --batch 1
  step gpu_tests "$PYTHON" -m pytest -q -s -p no:cacheprovider tests/models/test_host_syncs.py tests/test_host_tensor.py
}

compile() {
  local command=("$PYTHON" -m gfldet.cli benchmark configs/gfl/gfl_r50_fpn_1x_coco.yaml --device cuda --runs 30
                 --warmup 10 --compile)
  step compile_train "${command[@]}" --mode train --amp fp16 --batch 2 --find-syncs
  step compile_infer "${command[@]}" --mode infer --amp off --batch 1
}

quickstart() {
  local data
  data=$(mktemp -d)/synthetic
  step synth "$PYTHON" -m gfldet.cli data synth --out "$data"
  local config=configs/quickstart/gfl_r18_synthetic.yaml
  local opts=(--opts train.device=cuda data.num_workers=4 "data.train.ann_file=$data/train.json"
              "data.train.img_dir=$data" "data.val.ann_file=$data/val.json" "data.val.img_dir=$data"
              "data.test.ann_file=$data/val.json" "data.test.img_dir=$data")
  step quickstart_train "$PYTHON" -m gfldet.cli train "$config" --work-dir "$out/quickstart" --amp fp16 "${opts[@]}"
  step quickstart_test "$PYTHON" -m gfldet.cli test "$config" "$out/quickstart/latest.pth" --work-dir "$out/quickstart" \
    "${opts[@]}"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
for part in "${parts[@]}"; do
  "$part"
done
exit $failed
