"""A few validation images with the model's detections drawn on them (TensorBoard at each evaluation)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["prediction_images", "log_prediction_images"]


@torch.no_grad()
def prediction_images(model: torch.nn.Module, loader, *, indices: Sequence[int], device: torch.device | str,
                      score_thr: float = 0.3) -> list[tuple[int, np.ndarray]]:
    """(image id, RGB uint8 [H, W, 3] original image) for ``loader.dataset[i]`` of each index: ground truth in
    grey, detections scoring at least ``score_thr`` in class colours with name and score.

    model: a Detector (put in eval mode here, left so); loader: a gfldet val/test DataLoader (its dataset and its
    ``collate_fn``, which normalises and pads, are used; its sampler is not).
    """
    from gfldet.visualization import draw_detections

    model.eval()
    dataset = loader.dataset
    records = {record.image_id: record for record in dataset.records}
    drawn = []
    for index in indices:
        sample = dataset[index]
        batch = loader.collate_fn([sample]).to(device)
        pred = model.predict(batch.images, batch.image_sizes, batch.scale_factors)[0]
        keep = pred["scores"] >= score_thr
        record = records[sample.image_id]
        image = draw_detections(dataset.load_image(record), record.boxes, np.full(len(record.boxes), -1))
        image = draw_detections(image, pred["boxes"][keep].cpu(), pred["labels"][keep].cpu(),
                                pred["scores"][keep].cpu(), dataset.class_names)
        drawn.append((sample.image_id, image))
    return drawn


def log_prediction_images(writer, images: Sequence[tuple[int, np.ndarray]], step: int, *,
                          tag: str = "val/predictions") -> None:
    """Add ``prediction_images``' output to a TensorBoard ``SummaryWriter`` as ``{tag}/{image id}``."""
    for image_id, image in images:
        writer.add_image(f"{tag}/{image_id}", image, step, dataformats="HWC")
