"""Test entry point (also under torchrun): ``python tools/test.py CONFIG CKPT [args]``."""
import sys

from gfldet.cli import main

if __name__ == "__main__":
    sys.exit(main(["test", *sys.argv[1:]]))
