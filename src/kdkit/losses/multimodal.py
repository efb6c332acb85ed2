"""Modality-specific distillation, MSD (Jin, Sanjabi, Nie, Tan, Ren & Firooz, "MSD: Saliency-aware Knowledge
Distillation for Multimodal Understanding", Findings of EMNLP 2021; SPEC §11).

Besides KD on the full input, the student matches the teacher's predictions on each single-modality view (only
modality m present, the others masked):

    L = CE + KD_full + Σ_m w_m(x) · KD_m,    KD_m = T² · KL(σ(z_t^m / T) ‖ σ(z_s^m / T)),

with the weights from each modality's *saliency* for the teacher, the change of its prediction when m is removed:

    s_m(x) = ½ ‖σ(z_t(x)) − σ(z_t(x without m))‖₁   (total variation, in [0, 1]).

Weighting schemes (:func:`saliency_weights`), each summing to 1 over the modalities of a sample: ``equal``
(1/M), ``population`` (each modality's mean saliency over the data, normalised), ``instance`` (the sample's own
saliencies, normalised; equal where a sample's are all 0). The paper's fourth scheme, weights learned by a
meta-learner on a held-out split, sits in the training task, not here.

Shapes: logits ``(B, C)``; the views of M modalities stacked ``(M, B, C)``; weights and saliencies ``(B, M)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdkit.errors import ConfigError
from kdkit.losses._reduce import reduce_loss
from kdkit.losses.logits import kl_divergence

SCHEMES = ("equal", "population", "instance")


def modality_saliency(teacher_logits: Tensor, teacher_removed_logits: Tensor) -> Tensor:
    """``(B, M)`` total-variation change of the teacher's class distribution when each modality is removed.

    Args:
        teacher_logits: ``(B, C)`` on the full input.
        teacher_removed_logits: ``(M, B, C)``, view m = the input without modality m.
    """
    if teacher_removed_logits.dim() != 3 or teacher_removed_logits.shape[1:] != teacher_logits.shape:
        raise ConfigError(f"modality_saliency: removed-modality logits {tuple(teacher_removed_logits.shape)} must be "
                          f"(M, *{tuple(teacher_logits.shape)})")
    full = torch.softmax(teacher_logits.float(), dim=-1)
    removed = torch.softmax(teacher_removed_logits.float(), dim=-1)
    return 0.5 * (removed - full).abs().sum(-1).transpose(0, 1)


def saliency_weights(saliency: Tensor, scheme: str, population: Tensor | None = None) -> Tensor:
    """``(B, M)`` weights of the per-modality terms, each row summing to 1.

    ``population`` (``(M,)``, the modalities' mean saliency over the training data) is required by the
    ``population`` scheme and ignored by the others; ``saliency`` (``(B, M)``) is used by ``instance`` (and sets
    the shape).
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"MSD weighting '{scheme}' is not one of {', '.join(SCHEMES)}")
    batch, modalities = saliency.shape
    equal = torch.full((batch, modalities), 1.0 / modalities, dtype=saliency.dtype, device=saliency.device)
    if scheme == "equal":
        return equal
    if scheme == "population":
        if population is None or population.shape != (modalities,):
            raise ConfigError(f"MSD weighting 'population' needs the {modalities} modalities' mean saliency")
        total = population.sum()
        return equal if total <= 0 else (population / total).expand(batch, modalities).to(saliency.dtype)
    total = saliency.sum(-1, keepdim=True)
    return torch.where(total > 0, saliency / total.clamp_min(torch.finfo(saliency.dtype).tiny), equal)


def msd_loss(student_views: Tensor, teacher_views: Tensor, weights: Tensor, temperature: float = 1.0,
             reduction: str = "mean") -> Tensor:
    """Σ_m w_m(x) · T² · KL(σ(z_t^m/T) ‖ σ(z_s^m/T)) per sample, over the single-modality views.

    Args:
        student_views, teacher_views: ``(M, B, C)`` logits, view m = only modality m present.
        weights: ``(B, M)`` (see :func:`saliency_weights`).

    Returns:
        Scalar for ``"mean"``/``"sum"``, ``(B,)`` for ``"none"``; 0 when the student's views equal the teacher's.
    """
    if student_views.shape != teacher_views.shape or student_views.dim() != 3:
        raise ConfigError(f"msd_loss: student views {tuple(student_views.shape)} and teacher views "
                          f"{tuple(teacher_views.shape)} must both be (M, B, C)")
    if weights.shape != (student_views.shape[1], student_views.shape[0]):
        raise ConfigError(f"msd_loss: weights {tuple(weights.shape)} must be (B, M) = "
                          f"{(student_views.shape[1], student_views.shape[0])}")
    per_view = torch.stack([kl_divergence(s, t, temperature, reduction="none")
                            for s, t in zip(student_views, teacher_views)], dim=1)  # (B, M)
    return reduce_loss((weights.to(per_view.dtype) * per_view).sum(-1), None, reduction)
