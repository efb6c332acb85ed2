"""Token-level distillation of language models: forward KL, reverse KL, generalised JSD and total variation per
target token, from a dense teacher or from its cached top k with the rest of its mass spread over the other tokens.

With p = σ(z_t/T) the teacher's and q = σ(z_s/T) the student's distribution over the vocabulary at one target
position (temperature on both sides, as in GKD):

- forward KL(p‖q) = Σ p (log p − log q): word-level KD (Hinton; Kim & Rush 2016), mean-seeking;
- reverse KL(q‖p): mode-seeking (MiniLLM, Gu et al. ICLR 2024);
- generalised JSD_β = β·KL(p‖m) + (1−β)·KL(q‖m), m = β·p + (1−β)·q, 0 < β < 1 (GKD, Agarwal et al. ICLR 2024;
  the limits β → 0 and 1 vanish here, so use forward or reverse KL for them, as TRL does);
- total variation ½·Σ |p − q| (Wen et al. 2023, f-divergence KD).

Logits are ``(B, L, V)`` (or ``(N, V)``); ``mask`` ``(B, L)`` marks the target tokens (completion tokens; prompt and
padding 0). Reduction per valid token, see :func:`kdkit.losses.reduce_loss`; the engine rescales a micro-batch's
mean by its share of the optimiser step's tokens, so accumulation does not change the loss. No T² factor by default
(TRL's GKD and DistillKit's default); ``t2_scaling`` multiplies by T² as Hinton does.

**Top-k teacher** (:func:`topk_log_probs`): the cache keeps the teacher's k largest log-probabilities, their token
ids and the log of the mass outside them. The teacher's distribution is rebuilt over the whole vocabulary with that
tail mass spread evenly over the V − k other tokens (each then softened by T like any token), and the divergence is
the dense one against it. With k = V there is no tail and the result equals the dense loss. Merging the tail into
one bucket instead would be cheaper but wrong for mode-seeking divergences: a student putting all its mass on any
token outside the teacher's top k would match the whole tail bucket (reverse KL and JSD students collapse onto
junk tokens; measured on bbc_summaries).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdkit.errors import ConfigError, ModelError
from kdkit.losses._reduce import check_same_shape, reduce_loss
from kdkit.losses.logits import _check_temperature

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd")


def _plogp_ratio(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Σ a (log a − log b) over the last axis, 0 where a = 0 (no ``0 · −inf``)."""
    a = log_a.exp()
    # the where comes before the product so that no backward pass multiplies 0 by the −inf of an empty entry
    return (a * torch.where(a > 0, log_a - log_b, a.new_zeros(()))).sum(-1)


def divergence_from_log_probs(log_p: Tensor, log_q: Tensor, divergence: str = "forward_kl",
                              beta: float = 0.5) -> Tensor:
    """The per-position divergence between teacher ``log_p`` and student ``log_q`` (log-probabilities over the last
    axis, same shape), unreduced: shape ``log_p.shape[:-1]``. See the module docstring for the formulas."""
    check_same_shape("token divergence", log_q, log_p)
    if divergence == "forward_kl":
        return _plogp_ratio(log_p, log_q)
    if divergence == "reverse_kl":
        return _plogp_ratio(log_q, log_p)
    if divergence == "jsd":
        if not 0.0 < beta < 1.0:
            raise ConfigError(f"jsd: beta {beta} must be strictly between 0 and 1 (use forward_kl or reverse_kl for "
                              f"the limits)")
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        return beta * _plogp_ratio(log_p, log_m) + (1.0 - beta) * _plogp_ratio(log_q, log_m)
    if divergence == "tvd":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    raise ConfigError(f"divergence {divergence!r} is not one of {', '.join(DIVERGENCES)}")


def token_divergence(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                     divergence: str = "forward_kl", temperature: float = 1.0, beta: float = 0.5,
                     t2_scaling: bool = False, reduction: str = "mean") -> Tensor:
    """Token-level KD against a dense teacher: ``divergence`` between σ(z_t/T) and σ(z_s/T) at every target token.

    Args:
        student_logits, teacher_logits: ``(B, L, V)``, same shape (the teacher under ``torch.no_grad()``).
        mask: ``(B, L)``, 1 at the target tokens; None = all.
        divergence: ``forward_kl``, ``reverse_kl``, ``jsd`` (with ``beta``) or ``tvd``.

    Returns:
        Scalar for ``"mean"`` (per valid token) / ``"sum"``; ``(B,)`` for ``"none"``.
    """
    check_same_shape("token_divergence", student_logits, teacher_logits)
    _check_temperature(temperature)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    values = divergence_from_log_probs(log_p, log_q, divergence, beta)
    return reduce_loss(values * (temperature**2 if t2_scaling else 1.0), mask, reduction)


def topk_log_probs(topk_logprobs: Tensor, topk_indices: Tensor, tail_logmass: Tensor, vocab: int) -> Tensor:
    """The teacher's log-probabilities over the vocabulary from its top k: exact at the k stored tokens, the tail mass
    split evenly over the other V − k (``(..., k)``, ``(..., k)``, ``(...)`` → ``(..., V)``), renormalised (fp16
    storage leaves the sum a little off 1)."""
    k = topk_indices.shape[-1]
    if topk_logprobs.shape != topk_indices.shape or tail_logmass.shape != topk_logprobs.shape[:-1]:
        raise ModelError(f"top-k teacher: log-probs {tuple(topk_logprobs.shape)}, ids {tuple(topk_indices.shape)} and "
                         f"tail {tuple(tail_logmass.shape)} do not fit together")
    if k > vocab:
        raise ModelError(f"top-k teacher: k = {k} exceeds the student's vocabulary of {vocab}")
    rest = tail_logmass.float() - math.log(vocab - k) if k < vocab else torch.full_like(tail_logmass.float(),
                                                                                           -math.inf)
    full = rest.unsqueeze(-1).expand(*rest.shape, vocab).scatter(-1, topk_indices.long(), topk_logprobs.float())
    return F.log_softmax(full, dim=-1)


def topk_token_divergence(student_logits: Tensor, topk_logprobs: Tensor, topk_indices: Tensor, tail_logmass: Tensor,
                          mask: Tensor | None = None, divergence: str = "forward_kl", temperature: float = 1.0,
                          beta: float = 0.5, t2_scaling: bool = False, reduction: str = "mean") -> Tensor:
    """:func:`token_divergence` against a cached top-k teacher rebuilt over the vocabulary by :func:`topk_log_probs`.
    Shapes: student ``(B, L, V)``, top-k ``(B, L, k)``, tail ``(B, L)``."""
    if topk_logprobs.shape[:-1] != student_logits.shape[:-1]:
        raise ModelError(f"top-k teacher: log-probs {tuple(topk_logprobs.shape)} do not fit student logits "
                         f"{tuple(student_logits.shape)}")
    teacher = topk_log_probs(topk_logprobs, topk_indices, tail_logmass, student_logits.shape[-1])
    return token_divergence(student_logits, teacher, mask, divergence, temperature, beta, t2_scaling, reduction)
