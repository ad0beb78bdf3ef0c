"""Pictures and numbers about a detector: box-side distributions, training curves, error analysis.

    from gfldet.analysis import detections_with_distributions, save_box_distributions   # gfldet infer --show-dist
    from gfldet.analysis import plot_training_curves                                     # gfldet plot
    from gfldet.analysis import error_analysis, format_error_analysis, plot_error_analysis  # gfldet test --analyze
    from gfldet.analysis import plot_pr_curves                                           # gfldet test --analyze
    from gfldet.analysis import prediction_images, log_prediction_images                  # TensorBoard

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state, no display needed).
"""
from gfldet.analysis.box_distributions import (DistributionDetections, detections_with_distributions,
                                               plot_box_distributions, save_box_distributions)
from gfldet.analysis.error_analysis import (FP_TYPES, error_analysis, format_error_analysis, plot_error_analysis,
                                             plot_pr_curves)
from gfldet.analysis.prediction_images import log_prediction_images, prediction_images
from gfldet.analysis.training_curves import RunLog, plot_training_curves, read_log

__all__ = ["DistributionDetections", "detections_with_distributions", "plot_box_distributions",
           "save_box_distributions", "FP_TYPES", "error_analysis", "format_error_analysis", "plot_error_analysis",
           "plot_pr_curves",
           "log_prediction_images", "prediction_images", "RunLog", "plot_training_curves", "read_log"]
