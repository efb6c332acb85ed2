"""Teacher-free regularisers that soften the targets: label smoothing, confidence penalty, Beta smoothing."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from kdkit import losses
from kdkit.schema import WEIGHT_MAX, Fraction, Weight
from kdkit.terms.base import LossConfig, Term, register


class LabelSmoothingLoss(LossConfig):
    """Label smoothing (teacher-free): soft-CE to targets with 1 − ε on the true class and ε/(C−1) on the others.
    It replaces ``ce`` rather than sitting beside it."""

    name: Literal["label_smoothing"]
    epsilon: Fraction = 0.1


class ConfidencePenaltyLoss(LossConfig):
    """Confidence penalty (teacher-free, Pereyra et al. 2017): CE − β·H(σ(z_s)). It replaces ``ce``."""

    name: Literal["confidence_penalty"]
    beta: float = Field(0.1, ge=0, le=WEIGHT_MAX)


class BetaSmoothingLoss(LossConfig):
    """Beta smoothing (teacher-free, Zhang & Sabuncu 2020): soft-CE to instance-specific targets
    b_i·onehot(y_i) + (1 − b_i)/(C−1), b ~ Beta(a, 1) assigned by the rank of an EMA copy's true-class confidence.

    The paper's L = (1 − α)·CE + α·soft-CE(t_i) is two entries: ``ce`` with weight 1 − α and ``beta_smoothing``
    with weight α (default α = 0.6, so this term's weight defaults to 0.6). The EMA decay at update t is
    min(1 − 1/(t+1), ``ema_decay``)."""

    name: Literal["beta_smoothing"]
    weight: Weight = 0.6
    a: float = Field(3.0, gt=0, le=1e3)
    ema_decay: Fraction = 0.999


@register("label_smoothing")
class LabelSmoothingTerm(Term):
    """Label smoothing (Szegedy et al. 2016; teacher-free): soft-CE to targets 1 − ε on the true class, ε/(C−1) on
    the others."""

    config = LabelSmoothingLoss
    reads_teacher = False
    tasks = ("classification",)

    def __init__(self, cfg: LabelSmoothingLoss, teacher=None, student=None):
        super().__init__(cfg, teacher, student)
        self.epsilon = cfg.epsilon

    def forward(self, student, teacher, batch):
        labels = batch["labels"]
        targets = losses.label_smoothing_targets(labels, student.logits.shape[-1], self.epsilon)
        return losses.soft_target_cross_entropy(student.logits, targets.to(student.logits.dtype),
                                                mask=labels != losses.logits.IGNORE_INDEX)


@register("confidence_penalty")
class ConfidencePenaltyTerm(Term):
    """Confidence penalty (Pereyra et al. 2017; teacher-free): CE − β·H(σ(z_s))."""

    config = ConfidencePenaltyLoss
    reads_teacher = False
    tasks = ("classification",)

    def __init__(self, cfg: ConfidencePenaltyLoss, teacher=None, student=None):
        super().__init__(cfg, teacher, student)
        self.beta = cfg.beta

    def forward(self, student, teacher, batch):
        return losses.confidence_penalty(student.logits, batch["labels"], self.beta)


@register("beta_smoothing")
class BetaSmoothingTerm(Term):
    """Beta smoothing (Zhang & Sabuncu 2020): soft-CE to instance-specific targets ranked by an EMA copy.

    The term owns ``ema``, a frozen copy of the student (``requires_grad`` False, always in eval mode): it is in
    the trained module's state, so checkpoints hold it and resume restores it, and it is never exported.
    Each step it scores the batch's true-class confidences, which rank the ``Beta(a, 1)`` draws
    (:func:`~kdkit.losses.beta_smoothing_targets`). After optimiser step t (from 0) it moves towards the student
    with decay ``min(1 − 1/(t+1), ema_decay)`` (Tarvainen & Valpola's schedule: the first update copies the
    student, early ones average, later ones follow slowly). It costs one extra forward pass and one copy of
    the student's weights. Classification only: logits ``(B, C)``, labels ``(B,)``.
    """

    config = BetaSmoothingLoss
    unlabeled_rows = False  # ranks every row's true-class confidence
    reads_teacher = False
    tasks = ("classification",)

    def __init__(self, cfg: BetaSmoothingLoss, teacher: nn.Module | None = None, student: nn.Module | None = None):
        super().__init__(cfg, teacher, student)
        self.a, self.ema_decay = cfg.a, cfg.ema_decay
        self.ema = copy.deepcopy(student).requires_grad_(False).eval()
        # a buffer, so the step count is checkpointed with the weights it produced
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> "BetaSmoothingTerm":
        super().train(mode)
        self.ema.eval()  # confidences are scored without dropout
        return self

    def forward(self, student, teacher, batch):
        labels = batch["labels"]
        with torch.no_grad():
            ema_logits = self.ema(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            confidences = ema_logits.float().softmax(-1).gather(-1, labels[:, None]).squeeze(-1)
        targets = losses.beta_smoothing_targets(confidences, labels, student.logits.shape[-1], self.a)
        return losses.soft_target_cross_entropy(student.logits, targets.to(student.logits.dtype))

    @torch.no_grad()
    def after_optimizer_step(self, student: nn.Module) -> None:
        # the decay stays on the device: no host synchronisation per step
        decay = (1 - 1 / (self.ema_updates + 1).float()).clamp(max=self.ema_decay)
        for ema, current in zip(self.ema.parameters(), student.parameters()):
            ema.lerp_(current.detach(), (1 - decay).to(ema.dtype))  # ema ← decay·ema + (1 − decay)·current
        for ema, current in zip(self.ema.buffers(), student.buffers()):
            ema.copy_(current)
        self.ema_updates += 1
