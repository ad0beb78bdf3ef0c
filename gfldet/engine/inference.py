"""Distributed inference over a loader: each rank predicts its shard, rank order is undone by image id."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from gfldet.data.coco import read_rgb
from gfldet.data.problems import IMAGE_POLICIES, DataError, ProblemLog, check_policy
from gfldet.engine.amp import autocast
from gfldet.engine.distributed import all_gather_objects, is_main_process

__all__ = ["run_inference", "evaluated_image_ids", "readable_images"]


@torch.no_grad()
def run_inference(model: nn.Module, loader, *, device: torch.device, amp: str = "off",
                  desc: str = "inference") -> list[dict]:
    """Predict every image of ``loader`` (yielding Batch) and gather the predictions of all ranks.

    ``model`` is the bare detector (not the DDP wrapper); it is put in eval mode and left there.
    Returns, on every rank, one dict per distinct image sorted by image id: ``image_id``, ``boxes`` [K,4] xyxy
    original-image px, ``scores`` [K], ``labels`` [K] int64 (numpy arrays). An image predicted twice (with
    ``data.on_bad_image: skip`` an unreadable image is replaced by the next one) is kept once.
    """
    model.eval()
    local = []
    for batch in tqdm(loader, desc=desc, disable=not is_main_process(), dynamic_ncols=True, leave=False):
        batch = batch.to(device, non_blocking=True)
        with autocast(device, amp):
            predictions = model.predict(batch.images, batch.image_sizes, batch.scale_factors)
        for image_id, pred in zip(batch.image_ids, predictions):
            local.append({"image_id": int(image_id), "boxes": pred["boxes"].float().cpu().numpy(),
                          "scores": pred["scores"].float().cpu().numpy(), "labels": pred["labels"].cpu().numpy()})
    unique = {pred["image_id"]: pred for shard in all_gather_objects(local) for pred in shard}
    return [unique[image_id] for image_id in sorted(unique)]


def evaluated_image_ids(predictions: list[dict], image_ids: list[int]) -> list[int]:
    """The ids of ``image_ids`` that have a prediction, in their order: the images to evaluate.

    An image that could not be read (``data.on_bad_image: skip``) has none; counting its ground truth as missed
    would lower the AP, so it is left out of the evaluation, with a warning naming it.
    """
    predicted = {pred["image_id"] for pred in predictions}
    kept = [image_id for image_id in image_ids if image_id in predicted]
    if len(kept) < len(image_ids):
        missing = [image_id for image_id in image_ids if image_id not in predicted]
        print(f"[gfldet] warning: {len(missing)} image(s) could not be read and are left out of the evaluation "
              f"(ids {missing[:10]}{'...' if len(missing) > 10 else ''}; see the data.on_bad_image warnings)",
              flush=True)
    return kept


def readable_images(paths: Sequence[Path], *, on_bad_image: str) -> tuple[list[Path], ProblemLog]:
    """The files of ``paths`` that decode, and a log of the others (``data.on_bad_image: skip``).

    With ``on_bad_image: error`` the first undecodable file raises a DataError naming it, before any work is done.
    """
    check_policy("on_bad_image", on_bad_image, IMAGE_POLICIES)
    readable, skipped = [], ProblemLog("inference inputs")
    for path in tqdm(paths, desc="check images", unit="img", dynamic_ncols=True, leave=False):
        try:
            read_rgb(path)
        except DataError as err:
            if on_bad_image == "error":
                raise DataError(f"{err}; nothing was inferred (set data.on_bad_image: skip to skip and count "
                                f"such images)") from None
            skipped.add("unreadable image", str(err))
            continue
        readable.append(path)
    if not readable:
        raise DataError(f"none of the {len(paths)} input image(s) can be read:\n  " + "\n  ".join(skipped.lines()))
    return readable, skipped
