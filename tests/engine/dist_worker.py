"""Run by test_distributed.py, under torchrun (2 ranks x batch 2) or alone (1 process x batch 4).

Arguments: WORK_DIR [COMPILE_MODE] (the trainer's torch.compile mode; eager without it).
"""
import sys

import torch

from engine_fakes import make_trainer
from gfldet.engine.distributed import distributed_scope, get_rank, get_world_size, init_distributed
from gfldet.engine.reproducibility import set_deterministic

if __name__ == "__main__":
    torch.set_num_threads(1)
    set_deterministic(True)
    with distributed_scope():
        init_distributed("cpu")
        world_size = get_world_size()
        trainer = make_trainer(sys.argv[1], max_iters=6, batch_size=4 // world_size, checkpoint_interval=6,
                               rank=get_rank(), world_size=world_size,
                               compile_mode=sys.argv[2] if len(sys.argv) > 2 else None)
        trainer.train()
