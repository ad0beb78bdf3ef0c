"""gfldet: Generalized Focal Loss object detection."""
__version__ = "0.1.0"
