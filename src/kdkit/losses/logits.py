"""Losses on output logits: Hinton KD (KL or soft cross-entropy), hard-label CE, logit MSE.

Logits are ``(B, C)`` for classification or ``(B, L, V)`` for sequences; softmax is always over the last axis.
``mask`` is ``(B, L)`` for sequences (1 = real token) or ``(B,)`` / None for classification. Reductions follow
:func:`kdkit.losses.reduce_loss`: per sample for ``(B, C)``, per valid token for ``(B, L, V)``.

The teacher argument is a target: compute it under ``torch.no_grad()``. It is not detached here, so targets
built from student parameters (e.g. Universal-KD's attention over teacher layers) still pass gradient.
"""

import torch.nn.functional as F
from torch import Tensor

from kdkit.errors import ConfigError
from kdkit.losses._reduce import check_same_shape, kl_last_axis, reduce_loss

TEMPERATURE_ON = ("both", "teacher")
IGNORE_INDEX = -100


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature {temperature} must be > 0")


def _soft_log_probs(
    what: str, student_logits: Tensor, teacher_logits: Tensor, temperature: float, temperature_on: str
) -> tuple[Tensor, Tensor]:
    """Tempered log-probabilities (student, teacher) over the last axis."""
    check_same_shape(what, student_logits, teacher_logits)
    _check_temperature(temperature)
    if temperature_on not in TEMPERATURE_ON:
        raise ConfigError(f"temperature_on {temperature_on!r} is not one of {', '.join(TEMPERATURE_ON)}")
    student_temperature = temperature if temperature_on == "both" else 1.0
    return (
        F.log_softmax(student_logits / student_temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
    )


def kl_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    t2_scaling: bool = True,
    temperature_on: str = "both",
    reduction: str = "mean",
) -> Tensor:
    """Soft-target KD loss of Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network".

    ``T² · KL(σ(z_t/T) ‖ σ(z_s/T))`` per sample (``(B, C)``) or per token (``(B, L, V)``), summed over the last
    axis. It is 0 when the logits are equal. ``t2_scaling`` multiplies by ``T²``, which keeps the gradient
    magnitude independent of ``T`` when both sides are divided by ``T``; ``temperature_on="teacher"`` divides
    only the teacher (the student stays at ``T = 1``, as in TCT-ColBERT or born-again generations), in which case
    one usually also sets ``t2_scaling=False``.

    Args:
        student_logits, teacher_logits: ``(B, C)`` or ``(B, L, V)``, same shape.
        mask: ``(B, L)`` valid tokens for sequences, or None.

    Returns:
        Scalar for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"``.
    """
    log_s, log_t = _soft_log_probs("kl_divergence", student_logits, teacher_logits, temperature, temperature_on)
    scale = temperature**2 if t2_scaling else 1.0
    return reduce_loss(scale * kl_last_axis(log_t, log_s), mask, reduction)


def soft_cross_entropy(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    t2_scaling: bool = True,
    temperature_on: str = "both",
    reduction: str = "mean",
) -> Tensor:
    """Soft cross-entropy to the teacher distribution (Hinton et al. 2015): ``T² · (−Σ σ(z_t/T) log σ(z_s/T))``.

    Differs from :func:`kl_divergence` by the teacher entropy, a constant for the student, so the gradient is the
    same; the value is not 0 when student equals teacher. Arguments, shapes and reductions as in
    :func:`kl_divergence`.
    """
    log_s, log_t = _soft_log_probs("soft_cross_entropy", student_logits, teacher_logits, temperature, temperature_on)
    scale = temperature**2 if t2_scaling else 1.0
    return reduce_loss(-scale * (log_t.exp() * log_s).sum(-1), mask, reduction)


def cross_entropy(
    student_logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"
) -> Tensor:
    """Hard-label cross-entropy ``−log σ(z_s)_y``.

    Args:
        student_logits: ``(B, C)`` or ``(B, L, V)``.
        labels: ``(B,)`` or ``(B, L)`` class ids; positions equal to ``ignore_index`` do not count.

    Returns:
        Scalar for ``"mean"``/``"sum"`` (mean over labelled samples/tokens); ``(B,)`` for ``"none"``.
    """
    flat = F.cross_entropy(
        student_logits.reshape(-1, student_logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return reduce_loss(flat.view(labels.shape), labels != ignore_index, reduction)


def logit_mse(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Logit matching: ``mean_c ((z_s − z_t) / T)²`` over the last axis.

    The KD term for regression heads (Hinton et al. 2015 note that matching logits is the high-temperature limit
    of KD; CKD uses ``MSE(z_s/T, z_t/T)`` for STS-B). Shapes and reductions as in :func:`kl_divergence`.
    """
    check_same_shape("logit_mse", student_logits, teacher_logits)
    _check_temperature(temperature)
    values = ((student_logits - teacher_logits) / temperature).pow(2).mean(-1)
    return reduce_loss(values, mask, reduction)


def hinton_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 0.5,
    temperature: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    """Hinton et al. (2015) KD objective: ``(1 − α)·CE(y, σ(z_s)) + α·T²·KL(σ(z_t/T) ‖ σ(z_s/T))``.

    Both terms count the same positions, those whose label is not -100, so per-sample and per-token values
    combine linearly under every reduction.

    Args:
        student_logits, teacher_logits: ``(B, C)`` or ``(B, L, V)``.
        labels: ``(B,)`` or ``(B, L)``; -100 marks positions to ignore (padding).
        alpha: weight of the soft term, in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha {alpha} must be in [0, 1]")
    hard = cross_entropy(student_logits, labels, reduction=reduction)
    soft = kl_divergence(student_logits, teacher_logits, temperature, mask=labels != IGNORE_INDEX, reduction=reduction)
    return (1.0 - alpha) * hard + alpha * soft
