"""Validation images with detections drawn, and their TensorBoard records."""
from __future__ import annotations

import numpy as np

from gfldet.analysis import log_prediction_images, prediction_images
from gfldet.config import load_config
from gfldet.data import build_dataloader
from gfldet.data.synthetic import SynthSpec, generate_synthetic
from tests.export.tiny_models import tiny_detector, write_tiny_config


def test_images_keep_their_original_size_and_reach_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    generate_synthetic(SynthSpec(num_train=1, num_val=2, height=96, width=128, seed=4), tmp_path / "synth")
    cfg = load_config(write_tiny_config(tmp_path / "tiny.yaml", tmp_path / "synth"))
    loader = build_dataloader(cfg.data, "val")
    dataset = loader.dataset
    drawn = prediction_images(tiny_detector(), loader, indices=[0, 1], device="cpu", score_thr=0.5)
    assert [image_id for image_id, _ in drawn] == dataset.image_ids[:2]
    for (_, image), record in zip(drawn, dataset.records):
        original = dataset.load_image(record)
        assert image.shape == original.shape and image.dtype == np.uint8
        assert (image != original).any()  # boxes were drawn
    with SummaryWriter(tmp_path / "tb") as writer:
        log_prediction_images(writer, drawn, step=7)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert tags == [f"val/predictions/{i}" for i in dataset.image_ids[:2]]
    assert events.Images(tags[0])[0].step == 7 and events.Images(tags[0])[0].width == 128
