import json

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gfldet.engine.logging import TrainLogger


def test_scalars_jsonl_and_validation_images_reach_tensorboard(tmp_path):
    logger = TrainLogger(work_dir=tmp_path, enabled=True, max_iters=4, log_interval=2)
    for iteration in (1, 2):
        logger.log_step(iteration=iteration, epoch=0, scalars={"loss": 1.0 / iteration, "loss_dfl": 0.5}, lr=0.01)
    picture = np.zeros((24, 32, 3), np.uint8)
    picture[:, :16] = 255
    logger.log_images([(7, picture)])
    logger.close()

    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["iter"] == 2 and records[0]["loss"] == 0.75 and records[0]["lr"] == 0.01
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert "train/loss_dfl" in events.Tags()["scalars"]
    [image] = events.Images("val/predictions/7")
    assert image.step == 2 and (image.width, image.height) == (32, 24)


def test_files_wait_for_the_first_record_and_a_resume_replaces_what_it_logs_again(tmp_path):
    TrainLogger(work_dir=tmp_path / "unused", enabled=True, max_iters=4, log_interval=2).close()
    assert not (tmp_path / "unused").exists()  # e.g. a run refused while being set up

    def run(logger, iterations):
        for iteration in iterations:
            logger.log_step(iteration=iteration, epoch=0, scalars={"loss": float(iteration)}, lr=0.01)

    logger = TrainLogger(work_dir=tmp_path, enabled=True, max_iters=6, log_interval=2, tensorboard=False)
    run(logger, [1, 2, 3])
    checkpoint = logger.state_dict()  # after iteration 3, one iteration into the window of 4
    run(logger, [4, 5])
    logger.close()  # the partial window 5 is written
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"mode": "tra')  # killed while writing a line
    resumed = TrainLogger(work_dir=tmp_path, enabled=True, max_iters=6, log_interval=2, tensorboard=False)
    resumed.resume(3, checkpoint)
    run(resumed, [4, 5, 6])
    resumed.close()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["iter"], r["loss"]) for r in records] == [(2, 1.5), (4, 3.5), (6, 5.5)]
