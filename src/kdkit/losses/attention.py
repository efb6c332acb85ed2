"""Self-attention transfer: TinyBERT score MSE, MiniLM attention KL and value (Q-Q, K-K) relation KL.

Attention tensors are ``(B, H, L, L)`` (batch, heads, query, key); ``mask`` is ``(B, L)`` (1 = real token) or
None. A (query, key) pair counts only when both tokens are real; a query row counts when its token is real.
Inputs are zeroed outside the valid pairs before any arithmetic, so the ``-inf``/``finfo.min`` that attention
implementations put at padded keys can produce neither a ``nan`` value nor a ``nan`` gradient.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdkit.errors import ConfigError
from kdkit.losses._reduce import check_same_shape, kl_last_axis, pair_mask, reduce_loss, zero_invalid


def _row_kl(log_p_teacher: Tensor, log_p_student: Tensor, valid: Tensor, mask: Tensor | None, reduction: str):
    """KL per (head, valid query row) over valid keys, averaged over heads, reduced over valid query rows."""
    return reduce_loss(kl_last_axis(log_p_teacher, log_p_student, valid).mean(1), mask, reduction)


def attention_score_mse(
    student_scores: Tensor, teacher_scores: Tensor, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Attention-based distillation of TinyBERT (Jiao et al. 2020): MSE of pre-softmax scores ``QKᵀ/√d``.

    ``value(b, i, j) = mean_h (S_s[b,h,i,j] − S_t[b,h,i,j])²`` for each valid (query i, key j) pair; padded
    query rows and padded key columns are excluded. ``"mean"`` = sum over valid pairs / number of valid pairs in
    the batch; ``"sum"`` = sum over valid pairs; ``"none"`` = each sample's mean over its own valid pairs.
    When the head counts differ, the head-averaged score maps ``mean_h S`` are compared instead.

    Magnitude (docs/ckd_magnitudes.md, measured): the scores are large numbers, and on a student that starts from
    pretrained blocks this term at the paper's weight 1 carries about 100 times the gradient of 0.5·CE, so summed
    with the task loss in one stage it drives the encoder alone. TinyBERT never sums it with the task loss: its
    intermediate stage trains hidden + attention MSE alone, then the prediction stage trains soft CE alone (kdkit's
    ``stages``, recipe ``tinybert``). TinyBERT's released code averages over every entry of the padded batch and
    sums over layers; this function averages over real (query, key) pairs and the term averages over layer pairs.

    Args:
        student_scores: ``(B, H_s, L, L)``.
        teacher_scores: ``(B, H_t, L, L)``.
        mask: ``(B, L)`` or None.
    """
    check_same_shape("attention_score_mse", student_scores, teacher_scores, axes=(0, 2, 3))
    if student_scores.shape[1] != teacher_scores.shape[1]:
        student_scores, teacher_scores = student_scores.mean(1, keepdim=True), teacher_scores.mean(1, keepdim=True)
    valid = pair_mask(mask, student_scores.shape[0], student_scores.shape[-1], student_scores.device)
    diff = zero_invalid(student_scores, valid[:, None]) - zero_invalid(teacher_scores, valid[:, None])
    return reduce_loss(diff.pow(2).mean(1), valid, reduction)


def attention_kl(
    student_probs: Tensor, teacher_probs: Tensor, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Self-attention distribution transfer of MiniLM (Wang et al. 2020).

    ``L_AT = 1/(H·|x|) Σ_h Σ_i KL(A_t[h,i,:] ‖ A_s[h,i,:])`` over valid query rows ``i``, the KL summed over
    valid keys. ``"mean"`` = per valid query row (averaged over heads); ``"none"`` = each sample's mean over its
    valid rows. The student width is free but the head counts must match (use :func:`value_relation_kl`'s
    relation heads otherwise).

    Args:
        student_probs, teacher_probs: ``(B, H, L, L)`` post-softmax attention (HF eager ``attentions``).
        mask: ``(B, L)`` or None.
    """
    check_same_shape("attention_kl", student_probs, teacher_probs)
    valid = pair_mask(mask, student_probs.shape[0], student_probs.shape[-1], student_probs.device)[:, None]
    tiny = torch.finfo(student_probs.dtype).tiny
    log_s, log_t = (zero_invalid(p, valid).clamp_min(tiny).log() for p in (student_probs, teacher_probs))
    return _row_kl(log_t, log_s, valid, mask, reduction)


def _relation_log_probs(x: Tensor, relation_heads: int, mask: Tensor | None, valid: Tensor) -> Tensor:
    """``log softmax(V Vᵀ/√d_h)`` per relation head, ``(B, L, D)`` -> ``(B, A, L, L)``, invalid pairs masked."""
    batch, length, width = x.shape
    if width % relation_heads:
        raise ConfigError(f"relation_heads {relation_heads} does not divide the hidden width {width}")
    head_dim = width // relation_heads
    x = zero_invalid(x, None if mask is None else mask[..., None])
    x = x.reshape(batch, length, relation_heads, head_dim).transpose(1, 2)
    scores = (x @ x.transpose(-1, -2) / math.sqrt(head_dim)).masked_fill(~valid, torch.finfo(x.dtype).min)
    return F.log_softmax(scores, dim=-1)


def value_relation_kl(
    student_values: Tensor,
    teacher_values: Tensor,
    relation_heads: int,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Value-relation transfer of MiniLM (Wang et al. 2020) and MiniLMv2 (Wang et al. 2021).

    Each ``(B, L, D)`` input is split into ``A = relation_heads`` chunks ``V_a`` of width ``d_h = D/A``;
    ``R_a = softmax(V_a V_aᵀ / √d_h)`` with padded keys excluded; the loss is
    ``1/(A·|x|) Σ_a Σ_i KL(R_t[a,i,:] ‖ R_s[a,i,:])`` over valid query rows ``i``, reduced like
    :func:`attention_kl`. Student and teacher widths may differ as long as both divide by ``A``; passing the
    queries or keys instead of the values gives MiniLMv2's Q-Q and K-K relations.

    Args:
        student_values: ``(B, L, D_s)``; teacher_values: ``(B, L, D_t)``.
        relation_heads: ``A``, a positive integer.
        mask: ``(B, L)`` or None.
    """
    check_same_shape("value_relation_kl", student_values, teacher_values, axes=(0, 1))
    if not (isinstance(relation_heads, int) and relation_heads > 0):
        raise ConfigError(f"relation_heads {relation_heads!r} must be a positive integer")
    batch, length = student_values.shape[:2]
    valid = pair_mask(mask, batch, length, student_values.device)[:, None]
    log_s = _relation_log_probs(student_values, relation_heads, mask, valid)
    log_t = _relation_log_probs(teacher_values, relation_heads, mask, valid)
    return _row_kl(log_t, log_s, valid, mask, reduction)
