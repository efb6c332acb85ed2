"""Calibration: how far a classifier's confidence is from its accuracy.

Expected calibration error (Naeini et al. 2015; Guo et al. 2017, "On Calibration of Modern Neural Networks"), the
calibration figure Zhang & Sabuncu (2020) report beside accuracy for label smoothing and Beta smoothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdkit.errors import ConfigError, DataError


def calibration_error(confidences: Tensor, correct: Tensor, n_bins: int = 15) -> float:
    """ECE from each prediction's confidence and whether it was right.

    ``ECE = Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|`` over ``n_bins`` equal-width bins of ``(0, 1]``; bin ``m`` holds
    the confidences in ``((m−1)/M, m/M]`` (a confidence of exactly 0 goes to the first bin).

    Args:
        confidences: ``(N,)`` confidence of each prediction (max softmax probability).
        correct: ``(N,)`` bool or 0/1, whether each prediction is right.
        n_bins: ``M`` ≥ 1.

    Returns:
        ECE as a fraction in ``[0, 1]``.
    """
    if n_bins < 1:
        raise ConfigError(f"n_bins {n_bins} must be >= 1")
    if confidences.numel() == 0:
        raise DataError("calibration_error: no predictions to score")
    confidences = confidences.reshape(-1).double()
    correct = correct.reshape(-1).double()
    bins = (confidences * n_bins).ceil().long().clamp(1, n_bins) - 1
    count = torch.bincount(bins, minlength=n_bins).double()
    gap = torch.bincount(bins, weights=correct - confidences, minlength=n_bins)  # Σ_B (correct − conf)
    # |B|/n · |acc(B) − conf(B)| = |Σ_B (correct − conf)| / n; empty bins add 0
    return (gap.abs().sum() / count.sum()).item()


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE of predicted class probabilities ``probs`` ``(N, C)`` against ``labels`` ``(N,)``: the confidence is
    ``max_c p_c`` and a prediction is correct when its argmax is the label. See :func:`calibration_error`."""
    if probs.dim() != 2 or probs.shape[0] != labels.shape[0]:
        raise DataError(f"expected_calibration_error: probs {tuple(probs.shape)} must be (N, C) and labels "
                        f"{tuple(labels.shape)} (N,)")
    confidences, predictions = probs.max(dim=-1)
    return calibration_error(confidences, predictions == labels, n_bins)
