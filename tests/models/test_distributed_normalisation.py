"""Loss normalisers are averaged over processes (2 CPU processes, gloo), as mmdetection's reduce_mean does in GFL,
ATSS and FCOS; the anchor heads (RetinaNet, SSD) keep each process's own, as mmdetection's AnchorHead."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gfldet.config import load_config
from gfldet.models import build_detector

CONFIG = Path(__file__).parents[2] / "configs/_base_/models/gfl_r50_fpn.yaml"
SMALL = ["model.backbone.depth=18", "model.backbone.pretrained=false", "model.num_classes=3",
         "model.neck.out_channels=32", "model.head.feat_channels=32", "model.head.stacked_convs=1"]


def _losses(with_gt: bool) -> tuple[dict[str, float], int]:
    """Head losses of one 64x64 image (one GT or none) from fixed outputs; every weight (max score) is 0.5."""
    head = build_detector(load_config(CONFIG, SMALL).model).head
    torch.manual_seed(0)
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    cls = [torch.zeros(1, 3, h, w) for h, w in sizes]
    reg = [torch.randn(1, 68, h, w) for h, w in sizes]
    boxes = torch.tensor([[4.5, 6.0, 40.0, 50.0]]) if with_gt else torch.zeros(0, 4)
    labels = torch.tensor([1]) if with_gt else torch.zeros(0, dtype=torch.long)
    losses = head.loss(cls, reg, [boxes], [labels], [(64, 64)])
    priors = head.priors_for(cls)
    assigned = head.assigner.assign(priors.anchors_px, priors.num_per_level, boxes[None],
                                    torch.ones(1, len(boxes), dtype=torch.bool))
    return {k: v.item() for k, v in losses.items()}, int(assigned.positive.sum())


def _ssd_losses(with_gt: bool) -> dict[str, float]:
    """SSD head losses of one 64x64 image (one GT or none) from fixed outputs (tests/models/test_ssd_head.py's head)."""
    from tests.models.test_ssd_head import make_head

    head = make_head()
    g = torch.Generator().manual_seed(0)
    cls = [torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 24, 4, 4, generator=g)]
    reg = [torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 24, 4, 4, generator=g)]
    boxes = torch.tensor([[4.5, 6.0, 40.0, 50.0]]) if with_gt else torch.zeros(0, 4)
    labels = torch.tensor([1]) if with_gt else torch.zeros(0, dtype=torch.long)
    return {k: v.item() for k, v in head.loss(cls, reg, [boxes], [labels], [(64, 64)]).items()}


def _worker(rank: int, port: int, queue, losses=_losses) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        result = losses(with_gt=rank == 0)
        queue.put((rank, result[0] if isinstance(result, tuple) else result))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(losses) -> tuple[dict[str, float], dict[str, float]]:
    ctx = mp.get_context("spawn")  # children re-import this module (multiprocessing passes sys.path along)
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, queue, losses)) for rank in (0, 1)]
    for p in procs:
        p.start()
    ranks = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return ranks[0], ranks[1]


def test_normalisers_are_averaged_over_processes():
    single, num_pos = _losses(with_gt=True)
    rank0, rank1 = _run_two_ranks(_losses)
    assert num_pos >= 4
    # rank 1 has no GT: mmdetection counts 1 positive for it, so the mean positive count is (num_pos + 1) / 2
    expected_cls = single["loss_cls"] * num_pos / ((num_pos + 1) / 2)
    assert abs(rank0["loss_cls"] - expected_cls) < 1e-5 * expected_cls
    # box losses are divided by the mean summed weight, 0.5 * num_pos / 2 (>= 1 here): twice the single-process loss
    for name in ("loss_bbox", "loss_dfl"):
        assert rank1[name] == 0 and single[name] > 0
        assert abs(rank0[name] - 2 * single[name]) < 1e-5 * single[name]


def test_anchor_head_normalisers_stay_per_process():
    """mmdetection's SSD (AnchorHead) divides each process's losses by its own sum_i max(num_pos_i, 1): rank 0's
    losses equal a single process's, although rank 1 has no GT."""
    single = _ssd_losses(with_gt=True)
    rank0, rank1 = _run_two_ranks(_ssd_losses)
    assert single["loss_cls"] > 0 and single["loss_bbox"] > 0 and rank1["loss_bbox"] == 0
    for name in ("loss_cls", "loss_bbox"):
        assert abs(rank0[name] - single[name]) < 1e-6 * single[name], (name, rank0[name], single[name])
