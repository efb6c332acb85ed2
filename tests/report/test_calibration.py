import pytest
import torch

from kdkit.errors import ConfigError, DataError
from kdkit.report.calibration import calibration_error, expected_calibration_error


def test_ece_by_hand_on_a_small_example():
    # 4 bins of width 0.25; confidences 0.9, 0.8 (bin 4), 0.6 (bin 3), 0.3 (bin 2)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 0, 0, 1])  # right, wrong, right, right; the last predicts class 1 at 0.7
    # bins: (0.75, 1]: conf 0.9, 0.8 → acc 0.5, conf 0.85; (0.5, 0.75]: 0.6 (right), 0.7 (right) → acc 1, conf 0.65
    expected = 2 / 4 * abs(0.5 - 0.85) + 2 / 4 * abs(1.0 - 0.65)
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(expected)


def test_ece_is_zero_when_every_bin_is_calibrated():
    # a bin of confidence 0.75 with 3 of 4 right, a bin of confidence 1.0 with all right
    confidences = torch.tensor([0.75, 0.75, 0.75, 0.75, 1.0, 1.0])
    correct = torch.tensor([1, 1, 1, 0, 1, 1])
    assert calibration_error(confidences, correct, n_bins=10) == pytest.approx(0.0)


def test_ece_bin_edges_are_closed_on_the_right():
    # 0.5 falls in (0.25, 0.5], not (0.5, 0.75]: with 0.5 and 0.6 in different bins the gaps do not cancel
    confidences, correct = torch.tensor([0.5, 0.6]), torch.tensor([1, 0])
    assert calibration_error(confidences, correct, n_bins=4) == pytest.approx((0.5 + 0.6) / 2)
    assert calibration_error(confidences, correct, n_bins=1) == pytest.approx(abs(0.5 - 0.55))


def test_ece_errors():
    with pytest.raises(ConfigError, match="n_bins 0"):
        calibration_error(torch.tensor([0.5]), torch.tensor([1]), n_bins=0)
    with pytest.raises(DataError, match="no predictions"):
        calibration_error(torch.tensor([]), torch.tensor([]))
    with pytest.raises(DataError, match=r"\(N, C\)"):
        expected_calibration_error(torch.rand(3), torch.tensor([0, 1, 0]))
