"""Train entry point for torchrun: ``torchrun --nproc_per_node=N tools/train.py CONFIG [args]``."""
import sys

from gfldet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
