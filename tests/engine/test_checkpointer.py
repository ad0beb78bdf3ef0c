import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gfldet.engine.checkpointer import (Checkpointer, atomic_save, load_checkpoint, load_model_weights,
                                       load_training_checkpoint)
from gfldet.errors import GfldetError


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    atomic_save({"step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]  # temporary file removed


def test_process_killed_mid_write_never_leaves_partial_file(tmp_path):
    path = tmp_path / "latest.pth"
    atomic_save({"step": 1}, path)
    # The child dies (os._exit, like SIGKILL: no cleanup) after writing half a checkpoint.
    script = textwrap.dedent(f"""
        import os, torch
        from gfldet.engine.checkpointer import atomic_save
        def dying_save(obj, f):
            f.write(b"x" * 1000); f.flush(); os._exit(9)
        torch.save = dying_save
        atomic_save({{"step": 2}}, {str(path)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == 9
    assert load_checkpoint(path) == {"step": 1}


def test_keep_last_k_and_aliases(tmp_path):
    ckpt = Checkpointer(work_dir=tmp_path, keep_last=2)
    for epoch in range(1, 5):
        ckpt.save({"epoch": epoch}, periodic_name=f"epoch_{epoch}.pth", is_best=epoch == 2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pth", "epoch_3.pth", "epoch_4.pth", "latest.pth"]
    assert load_checkpoint(tmp_path / "latest.pth") == {"epoch": 4}
    assert load_checkpoint(tmp_path / "best.pth") == {"epoch": 2}
    ckpt.save({"epoch": 5})  # latest only
    assert load_checkpoint(tmp_path / "epoch_4.pth") == {"epoch": 4}
    assert load_checkpoint(tmp_path / "latest.pth") == {"epoch": 5}


def test_aliases_are_copies_where_hard_links_fail(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    ckpt = Checkpointer(work_dir=tmp_path, keep_last=2)
    ckpt.save({"epoch": 1}, periodic_name="epoch_1.pth", is_best=True)
    ckpt.save({"epoch": 2}, periodic_name="epoch_2.pth")
    assert load_checkpoint(tmp_path / "best.pth") == {"epoch": 1}
    assert load_checkpoint(tmp_path / "latest.pth") == {"epoch": 2}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_iteration_files_sort_numerically(tmp_path):
    ckpt = Checkpointer(work_dir=tmp_path, keep_last=2)
    for it in (500, 1000, 1500):
        ckpt.save({"it": it}, periodic_name=f"iter_{it}.pth")
    assert [p.name for p in ckpt.periodic_files()] == ["iter_1000.pth", "iter_1500.pth"]


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(GfldetError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(GfldetError, match="cannot read checkpoint .*bad.pth"):
        load_checkpoint(bad)


def test_fine_tuning_load_skips_tensors_of_another_shape(tmp_path, capsys):
    trained = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 80))  # "80 classes"
    torch.save({"model": trained.state_dict()}, tmp_path / "coco.pth")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    fresh_head = model[1].weight.clone()
    load_model_weights(model, tmp_path / "coco.pth", strict=False)
    assert torch.equal(model[0].weight, trained[0].weight) and torch.equal(model[1].weight, fresh_head)
    out = capsys.readouterr().out
    assert "1.weight [80, 8] -> [3, 8]" in out and "1.bias [80] -> [3]" in out
    assert out.count("1.weight") == out.count("1.bias") == 1 and "missing" not in out  # each skipped tensor once
    with pytest.raises(GfldetError, match=r"does not fit the model: 1\.weight"):
        load_model_weights(model, tmp_path / "coco.pth")


def test_weights_prefer_the_ema_copy(tmp_path):
    raw, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    averaged = torch.optim.swa_utils.AveragedModel(ema)
    torch.save({"model": raw.state_dict(), "ema": averaged.state_dict()}, tmp_path / "ckpt.pth")
    model = torch.nn.Linear(2, 2)
    load_model_weights(model, tmp_path / "ckpt.pth")
    assert torch.equal(model.weight, ema.weight)



def test_resume_from_a_foreign_dict_names_the_file_and_what_is_expected(tmp_path):
    torch.save({"foo": 1}, tmp_path / "x.pth")
    with pytest.raises(GfldetError, match=r"x\.pth is not a gfldet training checkpoint: it holds keys foo, "
                                          r"not model, optimizer.*--load-from"):
        load_training_checkpoint(tmp_path / "x.pth")


def test_fine_tuning_from_another_architecture_is_an_error(tmp_path):
    torch.save({"model": torch.nn.Conv2d(3, 4, 3).state_dict()}, tmp_path / "other.pth")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    with pytest.raises(GfldetError, match=r"other\.pth fits only 0 of the model's 4 tensors"):
        load_model_weights(model, tmp_path / "other.pth", strict=False)
