"""Terms of the retrieval task: TCT-ColBERT's in-batch KL, Margin-MSE and the plain in-batch contrastive loss.

Both models' :class:`~kdkit.capture.Representations` carry the batch's ``(B, P)`` score matrix as ``logits``
(query i against every passage of the batch; the task's collator puts the B positives in columns 0..B−1 and, when
each query has a negative, query i's negative in column B + i); ``batch["labels"]`` holds each query's gold column.
The teacher's matrix is its late-interaction (MaxSim) score, live or from cached token vectors.

The retrieval task accepts only these losses (:func:`~kdkit.terms.base.own_losses_only`): the classification
losses read class logits or hidden states, which a score matrix is not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdkit import losses
from kdkit.errors import ConfigError
from kdkit.schema import Temperature
from kdkit.terms.base import CacheRequest, LossConfig, Term, own_losses_only, register

TASK = "retrieval"
own_losses_only(TASK)


class TCTLoss(LossConfig):
    """TCT-ColBERT: γ·CE(gold) + (1 − γ)·KL(softmax(φ_t/τ) ‖ softmax(s·φ_s)) over the batch's passages; ``scale``
    s (1 as released) is for cosine students, whose scores lie in [−1, 1]."""

    name: Literal["tct"]
    temperature: Temperature = 0.25
    gamma: float = Field(0.0, ge=0, le=1)
    scale: float = Field(1.0, gt=0, le=1000)


class MarginMSELoss(LossConfig):
    """Margin-MSE: (φ_s(q,d⁺) − φ_s(q,d⁻) − (φ_t(q,d⁺) − φ_t(q,d⁻)))², d⁻ the query's own negative."""

    name: Literal["margin_mse"]


class ContrastiveLoss(LossConfig):
    """In-batch contrastive CE of the student alone: CE(softmax(scale·φ_s), gold)."""

    name: Literal["contrastive"]
    scale: float = Field(1.0, gt=0, le=1000)


class _RankingTerm(Term):
    tasks = (TASK,)

    def cache_request(self):
        # the task caches the teacher's token vectors and scores every batch from them (MaxSim is cheap)
        return CacheRequest(hidden=frozenset({-1})) if self.reads_teacher else CacheRequest()


@register("tct")
class TCTTerm(_RankingTerm):
    """Lin, Yang & Lin 2021 (TCT-ColBERT), :func:`kdkit.losses.tct_loss`."""

    config = TCTLoss

    def forward(self, student, teacher, batch):
        return losses.tct_loss(student.logits, teacher.logits, batch["labels"], temperature=self.cfg.temperature,
                               gamma=self.cfg.gamma, scale=self.cfg.scale)


@register("margin_mse")
class MarginMSETerm(_RankingTerm):
    """Hofstätter et al. 2020, :func:`kdkit.losses.margin_mse` on each query's positive and its own negative."""

    config = MarginMSELoss

    def forward(self, student, teacher, batch):
        scores_s, scores_t = student.logits, teacher.logits
        rows = batch["labels"].new_tensor(range(scores_s.shape[0]))
        if scores_s.shape[1] != 2 * scores_s.shape[0]:
            raise ConfigError("loss 'margin_mse' needs one negative per query (data.negatives: bm25)")
        negative = rows + scores_s.shape[0]
        return losses.margin_mse(scores_s[rows, batch["labels"]], scores_s[rows, negative],
                                 scores_t[rows, batch["labels"]], scores_t[rows, negative])


@register("contrastive")
class ContrastiveTerm(_RankingTerm):
    """The in-batch negatives baseline without a teacher, :func:`kdkit.losses.in_batch_ce`."""

    config = ContrastiveLoss
    reads_teacher = False

    def forward(self, student, teacher, batch):
        return losses.in_batch_ce(student.logits, batch["labels"], scale=self.cfg.scale)
