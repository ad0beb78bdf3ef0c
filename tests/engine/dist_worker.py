"""Run by test_distributed.py, under torchrun (2 ranks) or alone (1 process): 4 images per optimiser step.

Arguments: WORK_DIR [--compile MODE] (the trainer's torch.compile mode; eager without it) [--accumulate K] (each
rank's 4 / world_size images per step come in K batches) [--count-allreduces] (writes how many gradient
all-reduces DDP ran to WORK_DIR/allreduces_rank<R>.txt).
"""
import argparse
from pathlib import Path

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from engine_fakes import make_trainer
from gfldet.engine.distributed import distributed_scope, get_rank, get_world_size, init_distributed
from gfldet.engine.reproducibility import set_deterministic

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir")
    parser.add_argument("--compile", default=None)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--count-allreduces", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    set_deterministic(True)
    with distributed_scope():
        init_distributed("cpu")
        world_size = get_world_size()
        trainer = make_trainer(args.work_dir, max_iters=6, batch_size=4 // world_size // args.accumulate,
                               accumulate=args.accumulate, checkpoint_interval=6, rank=get_rank(),
                               world_size=world_size, compile_mode=args.compile)
        allreduces = []
        if args.count_allreduces:
            def counting_allreduce(state, bucket):
                allreduces.append(bucket.index())
                return allreduce_hook(state, bucket)

            trainer.model.register_comm_hook(None, counting_allreduce)
        trainer.train()
        if args.count_allreduces:
            Path(args.work_dir, f"allreduces_rank{get_rank()}.txt").write_text(str(len(allreduces)))
