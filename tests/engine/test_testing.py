import torch

from gfldet.config import load_config
from gfldet.engine.testing import load_detector
from gfldet.models import build_detector
from tests.models.conftest import BASE_CONFIG, SMALL


def test_load_detector_never_loads_imagenet_weights(tmp_path):
    # The COCO configs say `pretrained: torchvision`; evaluating a checkpoint must not download (or read) ImageNet
    # weights, which the checkpoint overwrites anyway. A path that does not exist would fail if it were loaded.
    cfg = load_config(BASE_CONFIG, SMALL)
    trained = build_detector(cfg.model)
    torch.save({"model": trained.state_dict(), "meta": {}}, tmp_path / "ckpt.pth")
    cfg = load_config(BASE_CONFIG, [*SMALL, f"model.backbone.pretrained={tmp_path / 'missing.pth'}"])
    model, _ = load_detector(cfg, tmp_path / "ckpt.pth", torch.device("cpu"))
    assert cfg.model.backbone.pretrained.endswith("missing.pth")  # the caller's config is left as it was
    images = torch.randn(1, 3, 128, 160)  # P7 must hold 2+ values per GroupNorm group
    with torch.no_grad():
        expected = trained.eval().raw_outputs(images)[0][0]
        torch.testing.assert_close(model.raw_outputs(images)[0][0], expected, rtol=1e-4, atol=1e-4)
