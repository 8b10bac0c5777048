"""Evaluation metrics."""
from .metrics import IoUMetric, format_metrics_table, intersect_and_union, mean_iou, metrics_from_areas

__all__ = ['IoUMetric', 'format_metrics_table', 'intersect_and_union', 'mean_iou', 'metrics_from_areas']
