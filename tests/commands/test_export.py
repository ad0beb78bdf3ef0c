"""``gfldet export``: config + checkpoint -> ONNX / TorchScript files that reproduce the PyTorch detector."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from gfldet.data.coco import read_rgb
from gfldet.data.synthetic import SynthSpec, generate_synthetic
from gfldet.errors import GfldetError
from tests.export.tiny_models import run_command, tiny_detector, to_input, write_tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic dataset, the tiny config on it and a checkpoint of the tiny detector (meta with its config)."""
    root = tmp_path_factory.mktemp("export_cmd")
    generate_synthetic(SynthSpec(num_train=1, num_val=1, height=256, width=320, seed=7), root / "synth")
    model = tiny_detector(seed=1)
    ckpt = root / "latest.pth"
    torch.save({"model": model.state_dict(), "meta": {"class_names": ["circle", "square", "triangle", "cross"]}},
               ckpt)
    return {"config": write_tiny_config(root / "tiny.yaml", root / "synth"), "ckpt": ckpt, "model": model,
            "image": read_rgb(root / "synth" / "images" / "val_00000.jpg")}


def test_onnx_with_postprocess_matches_predict(trained, tmp_path):
    out = tmp_path / "gfl.onnx"
    assert run_command("export", [str(trained["config"]), str(trained["ckpt"]), "--with-postprocess", "--dynamic",
                                  "--input-size", "128", "160", "--opset", "16", "--out", str(out)]) == 0
    images = to_input(trained["image"])
    session = ort.InferenceSession(str(out))
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["class_names"] == '["circle", "square", "triangle", "cross"]' and meta["gfldet_view"] == "detections"
    boxes, scores, labels = session.run(None, {"images": images.numpy()})
    want = trained["model"].predict(images, [tuple(images.shape[-2:])], [(1.0, 1.0)])[0]
    assert len(scores) == len(want["scores"]) > 0
    np.testing.assert_array_equal(labels, want["labels"].numpy())
    np.testing.assert_allclose(boxes, want["boxes"].numpy(), rtol=1e-5, atol=1e-2)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_defaults_to_the_checkpoint_path_and_the_config_size(trained, capsys):
    assert run_command("export", [str(trained["config"]), str(trained["ckpt"]), "--format", "torchscript",
                                  "--outputs", "decoded"]) == 0
    out = trained["ckpt"].with_suffix(".pt")
    assert "input dynamic" in capsys.readouterr().out and out.is_file()
    scores, boxes = torch.jit.load(str(out))(torch.randn(1, 3, 320, 320))  # synthetic test Resize: [320, 320]
    num_priors = 40 * 40 + 20 * 20 + 10 * 10 + 5 * 5 + 3 * 3  # strides 8..128 on 320x320
    assert scores.shape == (1, num_priors, 4) and boxes.shape == (1, num_priors, 4)


def test_static_onnx_takes_one_image_by_default_and_batch_sets_another(trained, tmp_path, capsys):
    config, ckpt, images = str(trained["config"]), str(trained["ckpt"]), to_input(trained["image"])  # [1,3,256,320]
    for argv, batch in (([], 1), (["--batch", "2"], 2)):
        out = tmp_path / f"b{batch}.onnx"
        assert run_command("export", [config, ckpt, "--input-size", "256", "320", "--out", str(out), *argv]) == 0
        assert f"input {batch}x3x256x320" in capsys.readouterr().out
        outputs = ort.InferenceSession(str(out)).run(None, {"images": images.expand(batch, -1, -1, -1).numpy()})
        want = trained["model"].raw_outputs(images)[0][0]
        np.testing.assert_allclose(outputs[0], want.expand(batch, -1, -1, -1).detach().numpy(), atol=1e-4)


def test_batch_and_dynamic_exclude_each_other(trained):
    with pytest.raises(GfldetError, match="drop it with --dynamic"):
        run_command("export", [str(trained["config"]), str(trained["ckpt"]), "--dynamic", "--batch", "2"])


def test_checkpoint_of_another_model_is_a_clear_error(trained, tmp_path):
    with pytest.raises(GfldetError, match="does not fit model of the config"):
        run_command("export", [str(trained["config"]), str(trained["ckpt"]), "--out", str(tmp_path / "x.onnx"),
                               "--opts", "model.num_classes=3"])


def test_postprocess_and_decoded_outputs_exclude_each_other(trained, tmp_path):
    with pytest.raises(GfldetError, match="drop --outputs"):
        run_command("export", [str(trained["config"]), str(trained["ckpt"]), "--with-postprocess",
                               "--outputs", "decoded"])
