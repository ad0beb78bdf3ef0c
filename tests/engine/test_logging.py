import json

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gfldet.engine.logging import TrainLogger


def test_scalars_jsonl_and_validation_images_reach_tensorboard(tmp_path):
    logger = TrainLogger(work_dir=tmp_path, enabled=True, max_iters=4, start_iter=0, log_interval=2)
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
