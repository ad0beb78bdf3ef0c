"""DDP on the CPU (gloo): 2 processes x batch 2 must match 1 process x batch 4 (and so must 2 processes
accumulating 2 batches of 1).

Tolerance: gloo's all-reduce sums the two ranks' gradients in a different order than a single process's
backward, so weights agree to float32 rounding (measured max difference 1e-7 after 6 SGD steps; we allow 1e-5).
"""
import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from engine_fakes import TinyDetector, make_trainer
from gfldet.engine.checkpointer import load_checkpoint
from gfldet.engine.distributed import distributed_scope, is_distributed

HERE = Path(__file__).parent


def _run(args, work_dir, *worker_args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args, str(HERE / "dist_worker.py"), str(work_dir), *worker_args],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_with_same_total_batch(tmp_path):
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path / "ddp")
    _run([], tmp_path / "single")
    ddp, single = load_checkpoint(tmp_path / "ddp" / "latest.pth"), load_checkpoint(tmp_path / "single" / "latest.pth")
    assert ddp["meta"]["iteration"] == single["meta"]["iteration"] == 6
    assert len(ddp["rng"]) == 2 and len(single["rng"]) == 1  # each rank's random generators, by rank
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, atol=1e-5, rtol=0, msg=key)
    torch.manual_seed(0)  # make_trainer's initial weights
    initial = TinyDetector().state_dict()
    diff = max((ddp["model"][k] - v).abs().max().item() for k, v in single["model"].items())
    print(f"max |ddp - single| = {diff:.3g}")
    moved = max((single["model"][k] - v).abs().max().item() for k, v in initial.items())
    assert moved > 1e-3  # training really changed the weights
    model = TinyDetector()
    model.load_state_dict(ddp["model"])  # the DDP checkpoint loads in a single process (no "module." prefix)


@pytest.mark.slow
def test_two_processes_accumulating_batches_match_single_process_with_same_total_batch(tmp_path):
    # each rank: 2 batches of 1 image per step, the gradient all-reduced once per step (no_sync before)
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], tmp_path / "ddp", "--accumulate", "2",
         "--count-allreduces")
    _run([], tmp_path / "single")
    ddp, single = load_checkpoint(tmp_path / "ddp" / "latest.pth"), load_checkpoint(tmp_path / "single" / "latest.pth")
    assert (ddp["meta"]["iteration"], ddp["meta"]["accumulate"], ddp["meta"]["batch_size"]) == (6, 2, 1)
    for rank in (0, 1):  # TinyDetector's gradients fit one bucket: one all-reduce per optimiser step, not per batch
        assert (tmp_path / "ddp" / f"allreduces_rank{rank}.txt").read_text() == "6"
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, atol=1e-5, rtol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_compiled_ddp_training_matches_eager_ddp(tmp_path, accumulate):
    # torch.compile over the DDP wrapper (train.compile under torchrun), also under no_sync(): same steps, and the
    # ranks exit cleanly.
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    _run(torchrun, tmp_path / "eager", "--accumulate", str(accumulate))
    _run(torchrun, tmp_path / "compiled", "--compile", "default", "--accumulate", str(accumulate),
         "--count-allreduces")
    for rank in (0, 1):  # compiled too: one gradient all-reduce per optimiser step, not per batch
        assert (tmp_path / "compiled" / f"allreduces_rank{rank}.txt").read_text() == "6"
    eager, compiled = (load_checkpoint(tmp_path / run / "latest.pth") for run in ("eager", "compiled"))
    assert compiled["meta"]["iteration"] == 6 and compiled["model"].keys() == eager["model"].keys()
    for key, value in eager["model"].items():
        torch.testing.assert_close(compiled["model"][key], value, atol=1e-5, rtol=0, msg=key)


@pytest.fixture
def one_rank_group(monkeypatch):
    """A real gloo process group of one rank in this process; records the barriers entered."""
    barriers = []
    real_barrier = dist.barrier
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: (barriers.append(1), real_barrier(*a, **k)))
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield barriers
    if is_distributed():
        dist.destroy_process_group()


def test_trainer_lets_the_ddp_wrapper_go_before_the_group_is_left(one_rank_group, tmp_path):
    # A DDP wrapper alive after destroy_process_group made gloo abort ranks at exit (SIGABRT, ~1 run in 3)
    with distributed_scope():
        trainer = make_trainer(tmp_path, max_iters=2, world_size=1)
        trainer.model = torch.nn.parallel.DistributedDataParallel(trainer.model)
        wrapper = weakref.ref(trainer.model)
        trainer.train()
        assert trainer.model is trainer.bare_model
        gc.collect()
        assert wrapper() is None  # nothing else holds it (cleanup_distributed also collects cycles)
    assert not is_distributed() and one_rank_group == [1]  # waited for the peers, then left


def test_distributed_scope_leaves_at_once_on_error(one_rank_group):
    with pytest.raises(RuntimeError, match="rank failed"), distributed_scope():
        raise RuntimeError("rank failed")
    assert not is_distributed() and one_rank_group == []  # no barrier: the peers may never come
