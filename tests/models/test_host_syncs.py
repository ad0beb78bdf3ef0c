"""How often a GFL training step and ``predict`` make the host wait for the GPU (runs only where a GPU is).

Every synchronisation drains the GPU's queue of launched kernels, so the GPU idles while the host queues the next
ones; the hot path keeps only the ones it cannot do without (see ``gfldet.engine.benchmark.find_host_syncs``).
"""
from __future__ import annotations

import pytest
import torch

from gfldet.engine.benchmark import find_host_syncs
from gfldet.models import build_detector

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="counts host-GPU synchronisations: needs a GPU")
CUDA = torch.device("cuda")
SIZES = [(512, 640), (480, 600)]


def _images() -> torch.Tensor:
    return torch.randn(len(SIZES), 3, 512, 640, device=CUDA)


def _gts() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """GTs around the image centres: every ATSS window lies on the grid, so no GT needs the exhaustive redo."""
    boxes = torch.tensor([[250.0, 200.0, 330.0, 300.0], [200.0, 150.0, 380.0, 330.0], [300.0, 250.0, 340.0, 280.0]])
    return [boxes.to(CUDA)] * len(SIZES), [torch.tensor([0, 1, 3], device=CUDA)] * len(SIZES)


def test_training_step_waits_for_the_gpu_twice(small_model_cfg):
    """The positives' gather (nonzero) and the ATSS window certificate; nothing in the losses or backward."""
    model = build_detector(small_model_cfg()).to(CUDA).train()
    images, (gt_boxes, gt_labels) = _images(), _gts()

    def loss(x):
        return sum(model(x, SIZES, gt_boxes, gt_labels).values())

    stages = [("loss", loss), ("backward", lambda total: total.backward())]
    find_host_syncs(stages, images, device=CUDA)  # warm-up: prior caches, cuDNN
    syncs = find_host_syncs(stages, images, device=CUDA)
    print(f"training step: {dict(syncs)}")
    assert sum(syncs.values()) <= 2, dict(syncs)


def test_predict_waits_three_times_plus_nms_per_image(small_model_cfg):
    """Candidates, size filter, per-image counts; then torchvision's batched_nms (1 per image seen from Python;
    its C++ nms waits once more, which torch reports on stderr only). Measured on an H200 before per-image counts
    moved from bincount to index_add_: 7 for 2 images (bincount waited twice more)."""
    model = build_detector(small_model_cfg("model.head.prior_prob=0.5")).to(CUDA).eval()
    images = _images()

    def predict(x):
        with torch.inference_mode():
            return model.predict(x, SIZES, [(1.0, 1.0)] * len(SIZES))

    find_host_syncs([("predict", predict)], images, device=CUDA)
    syncs = find_host_syncs([("predict", predict)], images, device=CUDA)
    print(f"predict: {dict(syncs)}")
    assert sum(syncs.values()) <= 3 + 2 * len(SIZES), dict(syncs)
