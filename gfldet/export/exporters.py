"""ONNX and TorchScript export of a detector view (see :mod:`gfldet.export.graph`).

ONNX goes through PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it needs no
extra package (the torch.export-based exporter needs ``onnxscript``) and it maps ``torchvision.ops.nms`` to the ONNX
``NonMaxSuppression`` operator, which onnxruntime runs with data-dependent output sizes. A static export accepts
only its example input's shape: ``batch`` (default 1) x 3 x ``input_size``. ``dynamic=True`` marks the batch (not
for the ``detections`` view, which takes one image) and both spatial sizes as dynamic.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from gfldet.config import Config
from gfldet.errors import GfldetError
from gfldet.export.graph import VIEWS, output_names

__all__ = ["MIN_OPSET", "DEFAULT_OPSET", "ExportError", "export_onnx", "export_torchscript", "model_metadata",
           "default_input_size"]

MIN_OPSET = 11  # dynamic TopK / Range / NonMaxSuppression with dynamic inputs
DEFAULT_OPSET = 17


class ExportError(GfldetError):
    """The export could not be done with the requested settings."""


def _view(model: nn.Module, view: str) -> nn.Module:
    if view not in VIEWS:
        raise ExportError(f"unknown export view {view!r}; expected one of {', '.join(VIEWS)}")
    return VIEWS[view](model).eval()


def default_input_size(cfg: Config) -> tuple[int, int]:
    """(H, W) of a test image from the first ``Resize`` of ``data.test.transforms``, rounded up to
    ``data.size_divisor``: a landscape image for a keep-ratio scale [long, short] ([1333, 800] -> (800, 1344)), the
    exact size for ``keep_ratio: false`` (scale [width, height])."""
    data = cfg.get("data") or {}
    divisor = int(data.get("size_divisor", 32))
    resizes = [t for t in (data.get("test") or {}).get("transforms", []) if t.get("type") == "Resize"]
    if not resizes:
        raise ExportError("no Resize in data.test.transforms to take the export size from: pass --input-size H W")
    scale = resizes[0]["scale"]
    height, width = (scale[1], scale[0]) if resizes[0].get("keep_ratio") is False else (min(scale), max(scale))
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def _dummy_input(model: nn.Module, input_size: Sequence[int], batch: int) -> torch.Tensor:
    """Random example input [batch, 3, H, W] for the tracer, on the model's device."""
    height, width = (int(v) for v in input_size)
    divisor = model.head.pad_size_divisor
    if height % divisor or width % divisor:
        raise ExportError(f"input size {height}x{width} must be a multiple of the size divisor {divisor}")
    device = next(model.parameters()).device
    return torch.randn(batch, 3, height, width, device=device)


def _example_batch(view: str, batch: int, dynamic: bool) -> int:
    """Batch of the traced example: ``batch`` for a static graph (its only accepted batch); 2 where the batch axis
    is dynamic, so that the tracer cannot take it for a constant 1; always 1 for ``detections`` (one image)."""
    if batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}")
    if view == "detections":
        if batch != 1:
            raise ExportError(f"the detections view (--with-postprocess) takes one image, got batch {batch}")
        return 1
    return 2 if dynamic else batch


def model_metadata(model: nn.Module, *, view: str, extra: dict | None = None) -> dict[str, str]:
    """String metadata stored in the ONNX file (JSON for non-strings; None values left out): what the graph
    expects and returns, plus ``extra`` (e.g. class_names)."""
    head = model.head
    meta = {"gfldet_view": view, "num_classes": head.num_classes, "strides": head.prior_generator.strides,
            "reg_max": getattr(head, "reg_max", None), "size_divisor": head.pad_size_divisor,
            "input": "images [N,3,H,W] float32 RGB, (pixel - mean) / std, padded bottom/right to size_divisor",
            "box_format": "xyxy pixels of the input tensor" if view != "raw" else "n/a (raw logits)",
            "test_cfg": vars(head.test_cfg), **(extra or {})}
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in meta.items()
            if value is not None}


def _dynamic_axes(view: str, names: Sequence[str], strides: Sequence[int]) -> dict[str, dict[int, str]]:
    """Named dynamic dimensions of the graph input and outputs (every size that follows the input's)."""
    if view == "detections":
        return {"images": {2: "height", 3: "width"}, **{name: {0: "num_detections"} for name in names}}
    images = {"images": {0: "batch", 2: "height", 3: "width"}}
    if view == "decoded":
        return {**images, **{name: {0: "batch", 1: "num_priors"} for name in names}}
    level_axes = [{0: "batch", 2: f"height_s{s}", 3: f"width_s{s}"} for s in strides]
    return {**images, **dict(zip(names, level_axes * 2))}  # raw: cls maps of every level, then reg maps


def export_onnx(model: nn.Module, out_path: str | Path, *, view: str = "raw", input_size: Sequence[int],
                batch: int = 1, dynamic: bool = False, opset: int = DEFAULT_OPSET,
                metadata: dict | None = None) -> Path:
    """Write ``model`` (a Detector) as ONNX; returns the file path.

    view: ``raw`` | ``decoded`` | ``detections`` (see gfldet.export.graph); input_size: (H, W) of the example
    input (a multiple of the head's size divisor), the only accepted size unless ``dynamic``; batch: the only
    accepted batch size unless ``dynamic`` (1 for ``detections``); opset >= 11.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: the exported graph needs opset >= {MIN_OPSET}")
    module = _view(model, view)
    images = _dummy_input(model, input_size, _example_batch(view, batch, dynamic))
    strides = model.head.prior_generator.strides
    names = output_names(view, len(strides), strides)
    axes = _dynamic_axes(view, names, strides) if dynamic else None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter and torch.jit warn about their deprecation, the tracer about shape checks that hold
        # for every input
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, (images,), str(out_path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=names, dynamic_axes=axes)
    proto = onnx.load(str(out_path))
    for key, value in model_metadata(model, view=view, extra=metadata).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out_path))
    return out_path


def export_torchscript(model: nn.Module, out_path: str | Path, *, view: str = "raw",
                       input_size: Sequence[int]) -> Path:
    """Write ``model`` as a traced TorchScript module (``torch.jit.load`` it); returns the file path.

    The trace records the example input's size only where the code turns sizes into Python numbers; the views
    keep sizes symbolic, so the traced module accepts other input sizes and batch sizes (``detections``: one image).
    """
    module = _view(model, view)
    images = _dummy_input(model, input_size, _example_batch(view, 1, dynamic=True))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(module, (images,), check_trace=False)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(out_path))
    return out_path
