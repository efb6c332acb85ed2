import pytest

from kdkit.errors import ConfigError
from kdkit.report.metric import distillation_metric


def test_spec_worked_check_resnet44_cifar100():
    # Alkhulaifi et al. 2021: ResNet-44 teacher at 71.76%; students at 62.84/35.36/15.25/3.74% of its size
    students = [(62.84, 69.12), (35.36, 67.04), (15.25, 62.87), (3.74, 43.11)]
    dms = [distillation_metric(size, 100.0, acc, 71.76, alpha=0.5) for size, acc in students]
    assert [round(dm, 3) for dm in dms] == [0.333, 0.210, 0.138, 0.218]


def test_alpha_weighs_size_against_score_and_units_cancel():
    assert distillation_metric(25, 100, 0.8, 1.0, alpha=1.0) == pytest.approx(0.25)
    assert distillation_metric(25, 100, 0.8, 1.0, alpha=0.0) == pytest.approx(0.2)
    assert distillation_metric(25e6, 100e6, 80, 100) == pytest.approx(distillation_metric(1, 4, 0.8, 1.0))
    assert distillation_metric(100, 100, 0.9, 0.9, alpha=0.3) == pytest.approx(0.3)


@pytest.mark.parametrize("args, name", [
    ((0, 100, 0.5, 0.9), "size_student"), ((10, -1, 0.5, 0.9), "size_teacher"),
    ((10, 100, -0.1, 0.9), "score_student"), ((10, 100, 0.5, 0.0), "score_teacher"),
    ((10, 100, float("nan"), 0.9), "score_student"),
])
def test_invalid_inputs_name_the_argument(args, name):
    with pytest.raises(ConfigError, match=f"{name} .* must be"):
        distillation_metric(*args)


def test_alpha_outside_unit_interval():
    with pytest.raises(ConfigError, match=r"alpha 1.5 must be in \[0, 1\]"):
        distillation_metric(10, 100, 0.5, 0.9, alpha=1.5)
