import pytest
import torch
from torchvision.ops import box_iou

from gfldet.box_coding import aligned_box_iou, bbox2distance, distance2bbox, integral_bins, integral_distance


def _points_inside(boxes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    frac = torch.rand(boxes.shape[0], 2, generator=generator) * 0.8 + 0.1
    return boxes[:, :2] + frac * (boxes[:, 2:] - boxes[:, :2])


def _random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 50
    wh = torch.rand(n, 2, generator=generator) * 30 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_distance_box_round_trip():
    g = torch.Generator().manual_seed(0)
    boxes = _random_boxes(64, g)
    points = _points_inside(boxes, g)
    distances = bbox2distance(points, boxes)
    assert (distances > 0).all()
    torch.testing.assert_close(distance2bbox(points, distances), boxes)


def test_bbox2distance_clamps_to_just_below_max_dist():
    points = torch.tensor([[10.0, 10.0]])
    boxes = torch.tensor([[-30.0, 8.0, 12.0, 40.0]])  # ltrb = 40, 2, 2, 30
    assert bbox2distance(points, boxes).tolist() == [[40.0, 2.0, 2.0, 30.0]]
    torch.testing.assert_close(bbox2distance(points, boxes, max_dist=16, eps=0.1), torch.tensor([[15.9, 2, 2, 15.9]]))
    outside = torch.tensor([[11.0, 11.0, 20.0, 20.0]])  # point left of / above the box -> negative l, t
    assert bbox2distance(points, outside, max_dist=16)[0, :2].tolist() == [0.0, 0.0]


def test_distance2bbox_clips_to_max_shape():
    points = torch.tensor([[5.0, 5.0], [95.0, 45.0]])
    distances = torch.full((2, 4), 10.0)
    expected = torch.tensor([[0.0, 0.0, 15.0, 15.0], [85.0, 35.0, 100.0, 50.0]])
    assert torch.equal(distance2bbox(points, distances, max_shape=(50, 100)), expected)
    per_image = torch.tensor([[[50.0, 100.0]], [[20.0, 10.0]]])  # [2 images, 1, (h, w)]
    clipped = distance2bbox(points.expand(2, 2, 2), distances, max_shape=per_image)
    assert torch.equal(clipped[0], expected)
    assert clipped[1].tolist() == [[0.0, 0.0, 10.0, 15.0], [10.0, 20.0, 10.0, 20.0]]


def test_integral_of_peaked_and_flat_distributions():
    bins = integral_bins(16, bin_width=0.5)
    assert bins[-1].item() == 8.0 and bins.shape == (17,)
    logits = torch.full((4, 17), -1e4)
    for side, peak in enumerate([0, 3, 7, 16]):
        logits[side, peak] = 0.0
    torch.testing.assert_close(integral_distance(logits.flatten(), bins), torch.tensor([0.0, 1.5, 3.5, 8.0]))
    assert integral_distance(torch.zeros(2, 3, 68), integral_bins(16)).allclose(torch.tensor(8.0))
    with pytest.raises(ValueError, match="4 \\* 17"):
        integral_distance(torch.zeros(2, 64), bins)


def test_integral_bbox2distance_round_trip():
    """Logits putting (y_r - y, y - y_l) on the two bins around each target decode back to the box."""
    g = torch.Generator().manual_seed(1)
    reg_max = 16
    boxes = _random_boxes(32, g) / 4  # "stride units"
    points = _points_inside(boxes, g)
    target = bbox2distance(points, boxes, max_dist=reg_max, eps=0.1)
    left = target.floor().long()
    probs = torch.zeros(*target.shape, reg_max + 1)
    probs.scatter_(-1, left[..., None], (left + 1 - target)[..., None])
    probs.scatter_add_(-1, (left + 1)[..., None], (target - left)[..., None])
    logits = probs.clamp(min=1e-12).log().flatten(-2)
    decoded = integral_distance(logits, integral_bins(reg_max))
    torch.testing.assert_close(decoded, target, atol=1e-5, rtol=0)
    unclamped = target.lt(reg_max - 0.1).all(dim=-1)
    torch.testing.assert_close(distance2bbox(points, decoded)[unclamped], boxes[unclamped], atol=1e-4, rtol=0)


def test_aligned_box_iou_is_the_diagonal_of_box_iou():
    g = torch.Generator().manual_seed(2)
    a, b = _random_boxes(50, g), _random_boxes(50, g)
    assert torch.equal(aligned_box_iou(a, b), box_iou(a, b).diagonal())
    assert aligned_box_iou(a[:1], a[:1]).item() == 1.0
    broadcast = aligned_box_iou(a[:, None, :], b[None, :3, :])
    assert broadcast.shape == (50, 3) and torch.equal(broadcast, box_iou(a, b[:3]))


def test_integral_distance_stays_float32_under_autocast():
    """bf16 autocast must not round the expectation: 17 bins in bf16 lose up to ~0.06 stride units."""
    logits = torch.randn(1000, 68, generator=torch.Generator().manual_seed(0)) * 3
    reference = integral_distance(logits, integral_bins(16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = integral_distance(logits, integral_bins(16))
    assert mixed.dtype == torch.float32
    assert (mixed - reference).abs().max().item() < 1e-5
