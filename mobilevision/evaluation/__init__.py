"""Evaluation: model complexity (params, MAdds, latency) and metrics."""

from .complexity import (
    count_madds,
    count_params,
    measure_latency,
    measure_latency_interleaved,
    spearman,
    time_interleaved,
)

__all__ = ["count_madds", "count_params", "measure_latency", "measure_latency_interleaved", "spearman",
           "time_interleaved"]

# COCO box mAP (pycocotools / faster-coco-eval as libraries)
from .coco_map import (  # noqa: E402
    BACKENDS as COCO_BACKENDS,
    STAT_KEYS as COCO_STAT_KEYS,
    COCOEvaluator,
    evaluate_results_file,
    format_coco_summary,
    scale_boxes,
)

__all__ += [
    "COCO_BACKENDS",
    "COCO_STAT_KEYS",
    "COCOEvaluator",
    "evaluate_results_file",
    "format_coco_summary",
    "scale_boxes",
]

# image classification: top-1 / top-5 / per-class accuracy, confusion matrix (torchmetrics)
from .classification import (  # noqa: E402
    classification_metrics,
    compute_classification_metrics,
    save_confusion_matrix_png,
    save_metrics_json,
    summarize_metrics,
)

__all__ += [
    "classification_metrics",
    "compute_classification_metrics",
    "save_confusion_matrix_png",
    "save_metrics_json",
    "summarize_metrics",
]

# geolocalization: Im2GPS accuracy within 1 / 25 / 200 / 750 / 2500 km, error maps
from .geolocalization import (  # noqa: E402
    GEO_THRESHOLDS_KM,
    PLANET_REFERENCE,
    GeoAccuracy,
    evaluate_prediction_csvs,
    geo_metrics,
    match_prediction_csvs,
    save_error_map,
    save_geo_json,
)

__all__ += [
    "GEO_THRESHOLDS_KM",
    "PLANET_REFERENCE",
    "GeoAccuracy",
    "evaluate_prediction_csvs",
    "geo_metrics",
    "match_prediction_csvs",
    "save_error_map",
    "save_geo_json",
]

# semantic segmentation: confusion matrix -> mIoU, pixel / mean class accuracy
from .segmentation import evaluate_mask_folders, segmentation_metrics, summarize_confusion  # noqa: E402

__all__ += ["evaluate_mask_folders", "segmentation_metrics", "summarize_confusion"]

# multi-label attributes: average precision per attribute and its mean, tuned thresholds
from .attributes import AttributeMetrics, attribute_stats, read_attribute_scores, save_attribute_ap_png  # noqa: E402

__all__ += ["AttributeMetrics", "attribute_stats", "read_attribute_scores", "save_attribute_ap_png"]
