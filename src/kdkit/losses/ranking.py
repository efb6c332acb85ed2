"""Ranking losses for retrieval distillation: late-interaction scores, TCT-ColBERT, Margin-MSE, in-batch CE.

Scores are ``(B, P)`` matrices: row i holds query i's score against each of the P passages of the batch (its own
positive, the other queries' positives and every query's negative: P = 2B with one negative per query, B without).
``labels`` ``(B,)`` gives the column of each query's gold passage. Softmax is over the passages (last axis).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdkit.errors import ConfigError
from kdkit.losses.logits import cross_entropy, kl_divergence


def maxsim(query: Tensor, query_mask: Tensor, passages: Tensor, passage_mask: Tensor) -> Tensor:
    """Late interaction of ColBERT (Khattab & Zaharia, SIGIR 2020): ``φ(q, d) = Σ_i max_j ⟨q_i, d_j⟩``.

    Args:
        query: ``(Bq, Lq, D)`` token vectors of the queries; query_mask: ``(Bq, Lq)``, 1 for tokens that count.
        passages: ``(P, Ld, D)`` token vectors of the passages; passage_mask: ``(P, Ld)``.
    Returns: ``(Bq, P)`` scores. Masked query tokens add nothing; masked passage tokens never win a max (a passage
    with no token left scores 0). L2-normalise the vectors beforehand for ColBERT's cosine interaction.
    """
    if query.shape[-1] != passages.shape[-1]:
        raise ConfigError(f"maxsim: query vectors of width {query.shape[-1]} and passage vectors of width "
                          f"{passages.shape[-1]}")
    # (Bq, P, Lq, Ld) dot products: at B = 32, 64 passages of 256 tokens and 16 query tokens, 8M floats
    sim = torch.einsum("qid,pjd->qpij", query, passages)
    sim = sim.masked_fill(~passage_mask.bool()[None, :, None, :], torch.finfo(sim.dtype).min)
    best = sim.amax(-1)
    best = best.masked_fill(~passage_mask.bool().any(-1)[None, :, None], 0.0)
    return (best * query_mask.to(best.dtype)[:, None, :]).sum(-1)


def tct_loss(student_scores: Tensor, teacher_scores: Tensor, labels: Tensor, temperature: float = 0.25,
             gamma: float = 0.0, scale: float = 1.0) -> Tensor:
    """TCT-ColBERT (Lin, Yang & Lin, RepL4NLP 2021, "In-Batch Negatives for Knowledge Distillation with
    Tightly-Coupled Teachers for Dense Retrieval"), mean over the B queries::

        L = γ·CE(softmax(s·φ_s), gold) + (1 − γ)·KL(softmax(φ_t / τ) ‖ softmax(s·φ_s))

    φ over all P passages of the batch (in-batch negatives); τ (0.25) divides the teacher's scores only, the student
    stays at temperature 1, and there is no T² factor; γ = 0 as released (pure KL). ``scale`` s multiplies the
    student's scores (1 as released, for a dot-product student; a cosine student lives in [−1, 1] and needs one,
    like MultipleNegativesRankingLoss's 20).

    Args: student_scores, teacher_scores ``(B, P)``; labels ``(B,)`` gold columns.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"tct_loss: gamma {gamma} must be in [0, 1]")
    student_scores = student_scores * scale
    kl = kl_divergence(student_scores, teacher_scores, temperature, t2_scaling=False, temperature_on="teacher")
    if gamma == 0.0:
        return kl
    return gamma * cross_entropy(student_scores, labels) + (1.0 - gamma) * kl


def margin_mse(student_positive: Tensor, student_negative: Tensor, teacher_positive: Tensor,
               teacher_negative: Tensor) -> Tensor:
    """Margin-MSE (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture
    Knowledge Distillation"): ``mean((s(q, d⁺) − s(q, d⁻) − (t(q, d⁺) − t(q, d⁻)))²)`` over the triples.

    Only margins are matched, so the student's scores may live on another scale than the teacher's up to a shift,
    but not up to a factor: a MaxSim margin sums over query tokens, so use a dot-product student (or scale).
    All arguments ``(B,)`` (or any equal shape).
    """
    return F.mse_loss(student_positive - student_negative, teacher_positive - teacher_negative)


def in_batch_ce(scores: Tensor, labels: Tensor, scale: float = 1.0) -> Tensor:
    """The plain in-batch contrastive loss (no teacher): ``CE(softmax(scale · φ_s), gold)`` over the batch's
    passages, mean over queries; as ``batch_softmax_loss`` of TCT-ColBERT's code and sentence-transformers'
    MultipleNegativesRankingLoss (which uses scale 20 on cosine scores). scores ``(B, P)``, labels ``(B,)``."""
    return cross_entropy(scores * scale, labels)
