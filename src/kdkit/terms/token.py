"""Terms of language-model distillation, on the target tokens of a generation batch (:mod:`kdkit.tasks.generation`).

A generation batch carries ``labels`` ``(B, K)``: the token each of the last K logit positions must predict, -100
where none (prompt, padding); the student's and the teacher's logits cover the same K positions. Both terms are
means over the batch's target tokens (unit ``target``), so a step's value is the mean over all of its completion
tokens whatever the accumulation or the number of processes.

- ``nll``: the student's negative log-likelihood of the reference (or sampled) completion: plain fine-tuning, and
  the (1 − λ)·NLL half of noisy self-distillation.
- ``token_kd``: a divergence between the teacher's and the student's next-token distributions at every target
  position (:mod:`kdkit.losses.token`): ``forward_kl`` (word-level KD, Kim & Rush 2016), ``reverse_kl``
  (MiniLLM), ``jsd`` with ``beta`` (GKD, Agarwal et al. 2024), ``tvd``; at ``temperature`` on both sides. From a
  live teacher's logits or a cached top-k teacher (k log-probabilities + the tail mass, read at the K completion
  positions only and rebuilt over the vocabulary with the tail spread evenly, :func:`kdkit.losses.topk_log_probs`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from kdkit.errors import ModelError
from kdkit.losses import token_divergence, topk_token_divergence
from kdkit.schema import Temperature
from kdkit.terms.base import CacheRequest, LossConfig, Term, own_losses_only, register

own_losses_only("generation")  # class logits and classification CE mean nothing to a language model


class NLLLoss(LossConfig):
    """Negative log-likelihood of the target tokens (teacher-free)."""

    name: Literal["nll"]


class TokenKDLoss(LossConfig):
    """Token-level KD: ``divergence`` (forward_kl, reverse_kl, jsd with ``beta`` in (0, 1), tvd) between the
    teacher's and the student's next-token distributions at ``temperature``, per target token (× T² with
    ``t2_scaling``)."""

    name: Literal["token_kd"]
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "tvd"] = "forward_kl"
    temperature: Temperature = 1.0
    beta: float = Field(0.5, gt=0, lt=1)
    t2_scaling: bool = False


def target_mask(batch: dict) -> torch.Tensor:
    return batch["labels"] != -100


def _check_positions(logits: torch.Tensor, batch: dict) -> None:
    if logits is None or logits.dim() != 3 or logits.shape[:2] != batch["labels"].shape:
        shape = None if logits is None else tuple(logits.shape)
        raise ModelError(f"token-level losses need logits (B, K, V) for the K labelled positions "
                         f"{tuple(batch['labels'].shape)}, got {shape}")


@register("nll")
class NLLTerm(Term):
    """−log q(y_t | y_<t, x) averaged over the target tokens."""

    config = NLLLoss
    reads_teacher = False
    tasks = ("generation",)
    unit = "target"

    def forward(self, student, teacher, batch):
        _check_positions(student.logits, batch)
        labels = batch["labels"]
        values = F.cross_entropy(student.logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                 reduction="sum")
        return values / target_mask(batch).sum().clamp(min=1)


@register("token_kd")
class TokenKDTerm(Term):
    """Token-level KD against the teacher's next-token distribution (live logits or cached top-k)."""

    config = TokenKDLoss
    tasks = ("generation",)
    unit = "target"

    def forward(self, student, teacher, batch):
        _check_positions(student.logits, batch)
        cfg, mask = self.cfg, target_mask(batch)
        kwargs = dict(divergence=cfg.divergence, temperature=cfg.temperature, beta=cfg.beta,
                      t2_scaling=cfg.t2_scaling)
        if teacher.logits is None and "topk" in teacher.modules:
            return topk_token_divergence(student.logits, *teacher.modules["topk"], mask=mask, **kwargs)
        return token_divergence(student.logits, teacher.logits, mask=mask, **kwargs)

    def cache_request(self):
        return CacheRequest(logits=True)
