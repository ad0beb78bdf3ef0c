"""Deployment exports: ONNX (network outputs, decoded boxes, or full detections with NMS) and TorchScript.

    from gfldet.export import export_onnx
    export_onnx(model, "gfl.onnx", view="detections", input_size=(800, 1344), dynamic=True)

Views and their inputs/outputs are described in :mod:`gfldet.export.graph`.
"""
from gfldet.export.exporters import (DEFAULT_OPSET, MIN_OPSET, ExportError, default_input_size, export_onnx,
                                     export_torchscript, model_metadata)
from gfldet.export.graph import VIEWS, DecodedOutputs, Detections, RawOutputs, output_names

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "ExportError", "export_onnx", "export_torchscript", "model_metadata",
           "VIEWS", "RawOutputs", "DecodedOutputs", "Detections", "output_names", "default_input_size"]
