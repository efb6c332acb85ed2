"""Modality-specific distillation, MSD (Jin, Sanjabi, Nie, Tan, Ren & Firooz, "MSD: Saliency-aware Knowledge
Distillation for Multimodal Understanding", Findings of EMNLP 2021; SPEC §11).

Besides KD on the full input, the student matches the teacher's predictions on each single-modality view (only
modality m present, the others masked):

    L = CE + KD_full + Σ_m w_m(x) · KD_m,    KD_m = T² · KL(σ(z_t^m / T) ‖ σ(z_s^m / T)),

with the weights from each modality's *saliency* for the teacher, the change of its prediction when m is removed:

    s_m(x) = ½ ‖σ(z_t(x)) − σ(z_t(x without m))‖₁   (total variation, in [0, 1]).

Weighting schemes (:func:`saliency_weights`), each summing to 1 over the modalities of a sample: ``equal``
(1/M), ``population`` (each modality's mean saliency over the data, normalised), ``instance`` (the sample's own
saliencies, normalised; equal where a sample's are all 0); the paper's fourth, weights learned by a meta-learner
on a held-out split, is :class:`SaliencyWeightNet` trained by :func:`msd_meta_gradient`.

Shapes: logits ``(B, C)``; the views of M modalities stacked ``(M, B, C)``; weights and saliencies ``(B, M)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

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


class SaliencyWeightNet(nn.Module):
    """MSD's learned weighting: ``w(x) = softmax(W·s(x) + b)`` from the ``(B, M)`` saliencies, W ``(M, M)`` and b
    ``(M,)`` started at zero (equal weights); trained by :func:`msd_meta_gradient`, never by the training loss."""

    def __init__(self, modalities: int):
        super().__init__()
        self.linear = nn.Linear(modalities, modalities)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, saliency: Tensor) -> Tensor:
        return torch.softmax(self.linear(saliency.to(self.linear.weight.dtype)), dim=-1)


def msd_meta_gradient(weight_net: nn.Module, saliency: Tensor, views_at: Callable[[dict], Tensor],
                      params: dict[str, Tensor], teacher_views: Tensor, meta_logits_at: Callable[[dict], Tensor],
                      meta_labels: Tensor, virtual_lr: float, temperature: float = 1.0
                      ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One look-ahead meta step of the learned weights (learning to reweight, Ren et al. 2018, as MSD's meta-learner).

    θ' = θ − η·∇_θ Σ_m w_m(x)·KD_m(θ) with w = ``weight_net(saliency)`` kept in the graph, then the meta loss
    CE(f(x_meta; θ'), y_meta) and its gradient w.r.t. the weight network's parameters (which must require grad).
    Only the weighted term steps θ here: the rest of the loss does not depend on w.

    Args:
        views_at: θ ↦ the student's ``(M, B, C)`` single-modality logits of the training batch at θ.
        params: the student's trainable parameters θ by name.
        meta_logits_at: θ ↦ the student's logits of the meta batch at θ.

    Returns:
        ``(meta loss, gradients in weight_net.parameters() order)``.
    """
    loss = msd_loss(views_at(params), teacher_views, weight_net(saliency), temperature)
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
    updated = {n: params[n] if g is None else params[n] - virtual_lr * g for n, g in zip(names, grads)}
    logits = meta_logits_at(updated)
    meta = torch.nn.functional.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), meta_labels)
    return meta.detach(), torch.autograd.grad(meta, list(weight_net.parameters()))
