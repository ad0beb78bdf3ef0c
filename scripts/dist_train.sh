#!/usr/bin/env bash
# Multi-GPU training with torchrun: one process per GPU, NCCL.
#   bash scripts/dist_train.sh CONFIG NGPUS [gfldet train args...]
#   bash scripts/dist_train.sh configs/gfl/gfl_r50_fpn_1x_coco.yaml 8 --work-dir work_dirs/gfl_r50_1x
# Multi-node: pass torchrun's own rendezvous settings through the environment, e.g. on each of 2 nodes
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 bash scripts/dist_train.sh CONFIG 8
# (NODE_RANK=1 on the second node). data.batch_size is per GPU; optimizer.lr is scaled to the total batch.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG NGPUS [gfldet train args...]" >&2
  exit 2
fi
CONFIG=$1
NGPUS=$2
shift 2
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"

exec "$PYTHON" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${MASTER_PORT:-29500}" \
  --nproc_per_node="$NGPUS" \
  tools/train.py "$CONFIG" "$@"
