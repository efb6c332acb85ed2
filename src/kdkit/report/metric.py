"""The distillation metric of Alkhulaifi, Alsahli & Ahmad, "Knowledge distillation in deep learning and its
applications", PeerJ Computer Science 2021.

One number that trades the student's size against its score, so distillation results of different sizes can be
ranked: DM = alpha * size_s / size_t + (1 - alpha) * (1 - score_s / score_t). Lower is better; a student as large as
its teacher and as good scores alpha, a free perfect copy 0.
"""

from __future__ import annotations

import math

from kdkit.errors import ConfigError


def distillation_metric(size_student: float, size_teacher: float, score_student: float, score_teacher: float,
                        alpha: float = 0.5) -> float:
    """DM = alpha * size_student / size_teacher + (1 - alpha) * (1 - score_student / score_teacher).

    Sizes are parameter counts (or bytes; any unit, the same for both). Scores are one "higher is better" metric
    on the same test set (accuracy as a fraction or in percent; only the ratio matters). ``alpha`` in [0, 1]
    weighs size against score; the paper's comparisons use 0.5.
    """
    for name, value in (("size_student", size_student), ("size_teacher", size_teacher),
                        ("score_teacher", score_teacher)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"distillation_metric: {name} {value!r} must be a finite number > 0")
    if not (isinstance(score_student, (int, float)) and math.isfinite(score_student) and score_student >= 0):
        raise ConfigError(f"distillation_metric: score_student {score_student!r} must be a finite number >= 0")
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise ConfigError(f"distillation_metric: alpha {alpha!r} must be in [0, 1]")
    return alpha * size_student / size_teacher + (1 - alpha) * (1 - score_student / score_teacher)
