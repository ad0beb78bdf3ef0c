"""Loss normalisers are averaged over processes (2 CPU processes, gloo), as mmdetection's reduce_mean does."""
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


def _worker(rank: int, port: int, queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        queue.put((rank, _losses(with_gt=rank == 0)[0]))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_normalisers_are_averaged_over_processes():
    single, num_pos = _losses(with_gt=True)
    ctx = mp.get_context("spawn")  # children re-import this module (multiprocessing passes sys.path along)
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, queue)) for rank in (0, 1)]
    for p in procs:
        p.start()
    ranks = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    rank0, rank1 = ranks[0], ranks[1]
    assert num_pos >= 4
    # rank 1 has no GT: mmdetection counts 1 positive for it, so the mean positive count is (num_pos + 1) / 2
    expected_cls = single["loss_cls"] * num_pos / ((num_pos + 1) / 2)
    assert abs(rank0["loss_cls"] - expected_cls) < 1e-5 * expected_cls
    # box losses are divided by the mean summed weight, 0.5 * num_pos / 2 (>= 1 here): twice the single-process loss
    for name in ("loss_bbox", "loss_dfl"):
        assert rank1[name] == 0 and single[name] > 0
        assert abs(rank0[name] - 2 * single[name]) < 1e-5 * single[name]
