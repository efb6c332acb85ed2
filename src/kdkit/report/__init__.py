"""Evaluation and reporting: size, accuracy, latency, the distillation metric and the teacher/student report."""

from kdkit.report.calibration import calibration_error, expected_calibration_error
from kdkit.report.evaluate import count_parameters, evaluate_classifier, measure_latency
from kdkit.report.metric import distillation_metric
from kdkit.report.report import compare, render_markdown, write_report

__all__ = ["calibration_error", "compare", "count_parameters", "distillation_metric", "evaluate_classifier",
           "expected_calibration_error", "measure_latency", "render_markdown", "write_report"]
