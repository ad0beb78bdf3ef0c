"""Data layer: COCO datasets, reference transforms, padded batches, grouped samplers, converters.

Public API::

    from gfldet.data import build_dataset, build_dataloader, Batch, fill_num_classes

Config keys live in ``configs/_base_/datasets/coco_detection.yaml``.
"""

from gfldet.data.batching import Batch, collate
from gfldet.data.builder import build_dataloader, build_dataset, fill_num_classes
from gfldet.data.coco import CocoDetection, Sample
from gfldet.data.problems import DataError

__all__ = ["Batch", "CocoDetection", "DataError", "Sample", "build_dataloader", "build_dataset", "collate",
           "fill_num_classes"]
