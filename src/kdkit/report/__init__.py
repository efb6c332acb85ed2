"""Evaluation and reporting: size, metrics, latency, the distillation metric, the teacher/student report and the
model card."""

from kdkit.report.calibration import calibration_error, expected_calibration_error
from kdkit.report.card import write_model_card
from kdkit.report.evaluate import count_parameters, evaluate_classifier, measure_latency
from kdkit.report.metric import distillation_metric
from kdkit.report.report import compare, render_markdown, write_report
from kdkit.report.results import LOWER_IS_BETTER, metrics_of, primary_of

__all__ = ["LOWER_IS_BETTER", "calibration_error", "compare", "count_parameters", "distillation_metric",
           "evaluate_classifier", "expected_calibration_error", "measure_latency", "metrics_of", "primary_of",
           "render_markdown", "write_model_card", "write_report"]
