import json
import math

import pytest
import torch

from engine_fakes import TinyDetector, make_trainer
from gfldet.engine.checkpointer import load_checkpoint
from gfldet.engine.reproducibility import set_deterministic
from gfldet.engine.trainer import NonFiniteLossError
from gfldet.errors import GfldetError


@pytest.fixture(autouse=True)
def deterministic():
    set_deterministic(True)
    yield
    set_deterministic(False)


def _train_losses(work_dir) -> dict[int, float]:
    records = [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]
    return {r["iter"]: r["loss"] for r in records if r["mode"] == "train"}


def _train_records(work_dir) -> list[dict]:
    """The train records of the work dir's log, without their (wall-clock) ``time``."""
    records = [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records if r["mode"] == "train"]


class Crash(Exception):
    pass


class CrashingDetector(TinyDetector):
    def __init__(self, crash_at: int):
        super().__init__()
        self.crash_at = crash_at

    def forward(self, *args):
        if self.calls + 1 == self.crash_at:
            raise Crash
        return super().forward(*args)


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full", max_iters=10)
    full.train()
    # 4 iterations per epoch; dies during iteration 8 -> last checkpoint iter_6 (epoch 1, 2 batches in)
    torch.manual_seed(0)  # same initial weights as the full run
    crashed = make_trainer(tmp_path / "run", max_iters=10, model=CrashingDetector(crash_at=8))
    with pytest.raises(Crash):
        crashed.train()
    state = load_checkpoint(tmp_path / "run" / "latest.pth")
    assert (state["meta"]["iteration"], state["meta"]["epoch"], state["meta"]["iter_in_epoch"]) == (6, 1, 2)
    torch.manual_seed(123)  # different initial weights: the checkpoint must restore everything
    resumed = make_trainer(tmp_path / "run", max_iters=10, model=TinyDetector())
    resumed.load_state_dict(state)
    resumed.train()
    full_losses, run_losses = _train_losses(tmp_path / "full"), _train_losses(tmp_path / "run")
    assert sorted(run_losses) == list(range(1, 11))
    assert run_losses == full_losses  # exact: deterministic mode, same data order, restored optimiser/scheduler
    for key, value in full.bare_model.state_dict().items():
        assert torch.equal(value, resumed.bare_model.state_dict()[key]), key
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


def test_checkpoints_written_at_interval(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=8, checkpoint_interval=3)
    trainer.train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["iter_6.pth", "iter_8.pth", "latest.pth"]
    assert load_checkpoint(tmp_path / "latest.pth")["meta"]["iteration"] == 8


def test_epoch_based_names_and_eval_best(tmp_path):
    scores = iter([0.3, 0.5, 0.4])
    trainer = make_trainer(tmp_path, max_iters=12, by_epoch=True, checkpoint_interval=1, eval_interval=1,
                           evaluate=lambda model: {"bbox_mAP": next(scores)})
    trainer.train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["best.pth", "epoch_2.pth", "epoch_3.pth", "latest.pth"]
    best = load_checkpoint(tmp_path / "best.pth")["meta"]
    assert best["epoch"] == 2 and best["best_score"] == 0.5
    vals = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines() if '"val"' in x]
    assert [v["bbox_mAP"] for v in vals] == [0.3, 0.5, 0.4]


def test_nan_steps_are_skipped_then_training_stops(tmp_path):
    model = TinyDetector()
    model.nan_at = {3}
    trainer = make_trainer(tmp_path, max_iters=6, model=model)
    before = {}

    original_step = trainer.train_step

    def spy(batches, num_batches):
        if model.calls == 2:
            before.update({k: v.clone() for k, v in model.state_dict().items()})
        out = original_step(batches, num_batches)
        if model.calls == 3:  # the NaN step left the weights untouched
            assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return out

    trainer.train_step = spy
    trainer.train()  # one NaN step: skipped, training goes on
    assert all(torch.isfinite(p).all() for p in model.parameters())
    events = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines() if '"event"' in x]
    assert len(events) == 1 and "skipped" in events[0]["message"] and events[0]["iter"] == 3

    model = TinyDetector()
    model.nan_at = {2, 3, 4}
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        make_trainer(tmp_path / "b", max_iters=6, model=model, max_nan_steps=3).train()


def test_grad_clip_bounds_the_update(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=1, grad_clip=1e-3, lr=1.0)
    trainer.train_step([next(iter(trainer.train_loader))])
    grads = [p.grad for p in trainer.bare_model.parameters() if p.grad is not None]
    assert torch.nn.utils.get_total_norm(grads).item() == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_modes_train(tmp_path, amp):
    trainer = make_trainer(tmp_path, max_iters=4, amp=amp)
    trainer.train()
    assert math.isfinite(_train_losses(tmp_path)[4])
    assert trainer.scaler.is_enabled() == (amp == "fp16")


def test_ema_is_tracked_and_resumed(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=4, ema_decay=0.5)
    trainer.train()
    raw, ema = trainer.bare_model.conv.weight, trainer.eval_model.conv.weight
    assert not torch.equal(raw, ema)
    state = load_checkpoint(tmp_path / "latest.pth")
    torch.manual_seed(7)
    other = make_trainer(tmp_path / "b", max_iters=4, ema_decay=0.5, model=TinyDetector())
    other.load_state_dict(state)
    assert torch.equal(other.eval_model.conv.weight, ema)


def test_checkpoint_interval_zero_keeps_only_the_final_checkpoint(tmp_path):
    make_trainer(tmp_path, max_iters=5, checkpoint_interval=0).train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["iter_5.pth", "latest.pth"]


def test_resume_refuses_another_batch_layout(tmp_path):
    make_trainer(tmp_path / "a", max_iters=2, batch_size=4).train()
    state = load_checkpoint(tmp_path / "a" / "latest.pth")
    other = make_trainer(tmp_path / "b", max_iters=4, batch_size=2)
    with pytest.raises(GfldetError, match="iterations per epoch.*--load-from"):
        other.load_state_dict(state)


def test_resume_refuses_another_batch_size_with_as_many_iterations_per_epoch(tmp_path):
    make_trainer(tmp_path / "a", max_iters=2, batch_size=8).train()  # 16 images: 2 iterations per epoch
    state = load_checkpoint(tmp_path / "a" / "latest.pth")
    other = make_trainer(tmp_path / "b", max_iters=4, batch_size=6)  # 2 iterations per epoch too
    with pytest.raises(GfldetError, match=r"1 process\(es\) x 8 images .*this run has 1 process\(es\) x 6 images"):
        other.load_state_dict(state)
    assert not (tmp_path / "b").exists()  # refused before anything was written
    del state["meta"]["batch_size"], state["meta"]["world_size"], state["logger"]  # a checkpoint of an older gfldet
    make_trainer(tmp_path / "c", max_iters=4, batch_size=6).load_state_dict(state)  # checked on what it has


@pytest.mark.parametrize("by_epoch", [False, True])
def test_resume_refuses_a_schedule_ending_before_the_checkpoint(tmp_path, by_epoch):
    make_trainer(tmp_path / "a", max_iters=8, by_epoch=by_epoch).train()  # 4 iterations per epoch
    state = load_checkpoint(tmp_path / "a" / "latest.pth")
    expected = (r"train.max_epochs=1 ends before the checkpoint \(epoch 2, iteration 8\): resume with "
                r"train.max_epochs >= 2" if by_epoch else r"train.max_iters=4 ends .* train.max_iters >= 8")
    with pytest.raises(GfldetError, match=expected):
        make_trainer(tmp_path / "b", max_iters=4, by_epoch=by_epoch).load_state_dict(state)
    assert not (tmp_path / "b").exists()


def test_last_partial_logging_window_is_written(tmp_path):
    make_trainer(tmp_path / "every", max_iters=8).train()
    make_trainer(tmp_path / "windows", max_iters=8, log_interval=3).train()
    losses = _train_losses(tmp_path / "every")
    assert _train_losses(tmp_path / "windows") == pytest.approx({3: sum(losses[i] for i in (1, 2, 3)) / 3,
                                                                 6: sum(losses[i] for i in (4, 5, 6)) / 3,
                                                                 8: (losses[7] + losses[8]) / 2})


def test_resumed_log_equals_the_uninterrupted_one_with_log_windows(tmp_path):
    make_trainer(tmp_path / "full", max_iters=10, log_interval=4).train()
    assert [r["iter"] for r in _train_records(tmp_path / "full")] == [4, 8, 10]
    # Dies during iteration 8: last checkpoint at 6, two iterations into the window of 8; on the way out the
    # logger wrote the partial window 5-7, which the resumed run replaces.
    torch.manual_seed(0)
    with pytest.raises(Crash):
        make_trainer(tmp_path / "crashed", max_iters=10, log_interval=4, model=CrashingDetector(crash_at=8)).train()
    assert [r["iter"] for r in _train_records(tmp_path / "crashed")] == [4, 7]
    resumed = make_trainer(tmp_path / "crashed", max_iters=10, log_interval=4, model=TinyDetector())
    resumed.load_state_dict(load_checkpoint(tmp_path / "crashed" / "latest.pth"))
    resumed.train()
    assert _train_records(tmp_path / "crashed") == _train_records(tmp_path / "full")
    # A finished run extended by a resume with a longer schedule: its final partial window (5) is taken up too.
    torch.manual_seed(0)
    make_trainer(tmp_path / "extended", max_iters=5, log_interval=4, milestone=5).train()
    extended = make_trainer(tmp_path / "extended", max_iters=10, log_interval=4)
    extended.load_state_dict(load_checkpoint(tmp_path / "extended" / "latest.pth"))
    extended.train()
    assert _train_records(tmp_path / "extended") == _train_records(tmp_path / "full")


def test_resume_with_fp16_from_a_checkpoint_trained_without_it(tmp_path):
    make_trainer(tmp_path / "a", max_iters=2).train()
    state = load_checkpoint(tmp_path / "a" / "latest.pth")
    assert state["scaler"] == {}
    resumed = make_trainer(tmp_path / "b", max_iters=4, amp="fp16")
    resumed.load_state_dict(state)
    resumed.train()
    assert resumed.iteration == 4 and resumed.scaler.is_enabled()


class TracedDetector(TinyDetector):
    """Records whether its forward ran under torch.compile's tracing."""

    traced = False

    def forward(self, *args):
        if torch.compiler.is_compiling():
            self.traced = True
        return super().forward(*args)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_compiled_training_matches_eager_and_leaves_the_module_eager(tmp_path, accumulate):
    torch.manual_seed(0)
    eager = make_trainer(tmp_path / "eager", max_iters=4, ema_decay=0.9, model=TracedDetector(),
                         accumulate=accumulate)
    eager.train()
    torch.manual_seed(0)
    compiled = make_trainer(tmp_path / "compiled", max_iters=4, ema_decay=0.9, compile_mode="default",
                            model=TracedDetector(), accumulate=accumulate)
    compiled.train()
    assert compiled.bare_model.traced and not eager.bare_model.traced
    eager_losses, compiled_losses = _train_losses(tmp_path / "eager"), _train_losses(tmp_path / "compiled")
    assert sorted(compiled_losses) == [1, 2, 3, 4]
    for it, loss in eager_losses.items():
        assert compiled_losses[it] == pytest.approx(loss, rel=1e-4, abs=1e-6), it
    # The module, its EMA copy and the checkpoint are the plain eager ones: same keys, close values.
    assert not hasattr(compiled.bare_model, "_orig_mod") and compiled.bare_model._compiled_call_impl is None
    checkpoint = load_checkpoint(tmp_path / "compiled" / "latest.pth")
    assert checkpoint["model"].keys() == eager.bare_model.state_dict().keys()
    for key, value in eager.eval_model.state_dict().items():
        torch.testing.assert_close(compiled.eval_model.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    events = [json.loads(line) for line in (tmp_path / "compiled" / "log.jsonl").read_text().splitlines()]
    assert any(e["mode"] == "event" and "torch.compile (mode default)" in e["message"] for e in events)


@pytest.mark.parametrize("compile_mode", [None, "default"])
def test_a_model_replaced_after_construction_is_the_one_trained(tmp_path, compile_mode):
    # e.g. wrapped in DistributedDataParallel after the Trainer was built: the steps must go through the new one
    trainer = make_trainer(tmp_path, max_iters=2, compile_mode=compile_mode)
    first = trainer.model
    trainer.model = TinyDetector()
    trainer.train()
    assert trainer.model.calls == 2 and first.calls == 0


def test_images_the_loader_skipped_are_logged_once(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=8, batch_size=4)      # 2 epochs over 16 images
    trainer.train_loader.dataset.skip_reasons = {5: "a.jpg: cannot decode", 9: "b.jpg: missing"}
    trainer.train()
    events = [json.loads(line)["message"] for line in (tmp_path / "log.jsonl").read_text().splitlines()
              if json.loads(line)["mode"] == "event"]
    skips = [m for m in events if m.startswith("image skipped")]
    assert len(skips) == 2 and {m.split(": ", 2)[-1] for m in skips} == {"a.jpg: cannot decode", "b.jpg: missing"}
    assert trainer.skipped_images == {"a.jpg: cannot decode", "b.jpg: missing"}


# -- gradient accumulation (train.accumulate) ---------------------------------------------------------------------
class RecordingDetector(TinyDetector):
    """Records the summed loss of every forward call (TinyDetector's losses are means over the batch's images)."""

    def __init__(self):
        super().__init__()
        self.call_losses: list[float] = []

    def forward(self, *args):
        losses = super().forward(*args)
        self.call_losses.append(sum(v.item() for v in losses.values()))
        return losses


def test_accumulated_batches_train_as_one_batch_of_their_images(tmp_path):
    # Batches of 2 accumulated in pairs cover the images of batches of 4 in the same order; TinyDetector's losses
    # are means over images, so the two runs take the same optimiser steps.
    whole = make_trainer(tmp_path / "whole", max_iters=6, batch_size=4)
    whole.train()
    split = make_trainer(tmp_path / "split", max_iters=6, batch_size=2, accumulate=2)
    split.train()
    assert (whole.bare_model.calls, split.bare_model.calls) == (6, 12)
    assert (split.iters_per_epoch, split.epoch, split.iteration) == (4, 1, 6)
    for key, value in whole.bare_model.state_dict().items():
        torch.testing.assert_close(split.bare_model.state_dict()[key], value, atol=1e-6, rtol=0, msg=key)
    whole_records, split_records = _train_records(tmp_path / "whole"), _train_records(tmp_path / "split")
    assert [r["lr"] for r in split_records] == [r["lr"] for r in whole_records]
    for a, b in zip(whole_records, split_records):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["loss_box"] == pytest.approx(a["loss_box"], rel=1e-5)
    single = make_trainer(tmp_path / "single", max_iters=6, batch_size=2)  # no accumulation: another trajectory
    single.train()
    assert not torch.allclose(single.bare_model.conv.weight, split.bare_model.conv.weight, atol=1e-4)


def test_the_last_step_of_an_epoch_takes_the_batches_left(tmp_path):
    # 10 images in batches of 2 = 5 batches; accumulating 2 per step: steps of 2, 2 and 1 batch per epoch.
    model = RecordingDetector()
    trainer = make_trainer(tmp_path, max_iters=6, batch_size=2, accumulate=2, dataset_size=10, model=model)
    trainer.train()
    assert (trainer.iters_per_epoch, trainer.epoch, model.calls) == (3, 2, 10)
    assert trainer.lr_scheduler.last_epoch == 6  # one scheduler step per optimiser step
    logged = [r["loss"] for r in _train_records(tmp_path)]
    calls = model.call_losses
    expected = [(calls[0] + calls[1]) / 2, (calls[2] + calls[3]) / 2, calls[4],
                (calls[5] + calls[6]) / 2, (calls[7] + calls[8]) / 2, calls[9]]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_resume_mid_epoch_with_accumulation_reproduces_the_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full", max_iters=8, batch_size=2, accumulate=2)
    full.train()
    # 8 batches = 4 steps per epoch; dies in the first batch of step 7 (forward 13) -> last checkpoint iter_6,
    # 2 steps = 4 batches into epoch 1
    torch.manual_seed(0)
    crashed = make_trainer(tmp_path / "run", max_iters=8, batch_size=2, accumulate=2, model=CrashingDetector(13))
    with pytest.raises(Crash):
        crashed.train()
    state = load_checkpoint(tmp_path / "run" / "latest.pth")
    assert (state["meta"]["iteration"], state["meta"]["iter_in_epoch"], state["meta"]["accumulate"]) == (6, 2, 2)
    torch.manual_seed(123)
    resumed = make_trainer(tmp_path / "run", max_iters=8, batch_size=2, accumulate=2, model=TinyDetector())
    resumed.load_state_dict(state)
    resumed.train()
    assert resumed.bare_model.calls == 4  # the 4 batches of steps 7 and 8, none replayed
    assert _train_losses(tmp_path / "run") == _train_losses(tmp_path / "full")
    for key, value in full.bare_model.state_dict().items():
        assert torch.equal(value, resumed.bare_model.state_dict()[key]), key


def test_resume_refuses_another_accumulation(tmp_path):
    # 8 images in batches of 2 = 4 batches: 2 steps per epoch accumulating 2 or 3
    make_trainer(tmp_path / "a", max_iters=2, batch_size=2, accumulate=2, dataset_size=8).train()
    state = load_checkpoint(tmp_path / "a" / "latest.pth")
    other = make_trainer(tmp_path / "b", max_iters=4, batch_size=2, accumulate=3, dataset_size=8)
    with pytest.raises(GfldetError, match=r"x 2 accumulated batch\(es\).*x 3 accumulated.*train\.accumulate"):
        other.load_state_dict(state)
    del state["meta"]["accumulate"]  # a checkpoint of a gfldet without accumulation: it had 1
    with pytest.raises(GfldetError, match=r"x 1 accumulated batch\(es\) \(2 iterations"):
        other.load_state_dict(state)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resume_from_a_checkpoint_after_an_epochs_last_step(tmp_path, accumulate):
    # an iteration schedule saves its final checkpoint right after an epoch's last step, before the epoch counter
    # moves on (iter_in_epoch == iters_per_epoch); a longer run resumed from it must start the next epoch whole
    kwargs = dict(batch_size=4 // accumulate, accumulate=accumulate, milestone=3)
    full = make_trainer(tmp_path / "full", max_iters=6, **kwargs)  # 4 steps per epoch
    full.train()
    first = make_trainer(tmp_path / "run", max_iters=4, **kwargs)
    first.train()
    state = load_checkpoint(tmp_path / "run" / "latest.pth")
    assert (state["meta"]["epoch"], state["meta"]["iter_in_epoch"]) == (0, 4)
    torch.manual_seed(123)
    resumed = make_trainer(tmp_path / "run", max_iters=6, model=TinyDetector(), **kwargs)
    resumed.load_state_dict(state)
    resumed.train()
    assert resumed.bare_model.calls == 2 * accumulate and _train_losses(tmp_path / "run") == _train_losses(
        tmp_path / "full")
    for key, value in full.bare_model.state_dict().items():
        assert torch.equal(value, resumed.bare_model.state_dict()[key]), key


def test_a_step_of_fewer_batches_averages_over_the_batches_it_has(tmp_path):
    # the last step of an epoch may take fewer than `accumulate` batches: its gradient is their mean, the same
    # as one step over that batch without accumulation
    batch = next(iter(make_trainer(tmp_path / "data", max_iters=1).train_loader))
    plain = make_trainer(tmp_path / "plain", max_iters=1)
    accumulating = make_trainer(tmp_path / "acc", max_iters=1, accumulate=2)
    plain.train_step([batch])
    accumulating.train_step([batch], num_batches=1)
    for key, value in plain.bare_model.state_dict().items():
        torch.testing.assert_close(accumulating.bare_model.state_dict()[key], value, atol=1e-7, rtol=0, msg=key)
