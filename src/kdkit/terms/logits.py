"""Terms on output logits: hard-label CE, Hinton KD / soft cross-entropy, logit MSE."""

from __future__ import annotations

from typing import Literal


from kdkit import losses
from kdkit.schema import Temperature
from kdkit.terms.base import CacheRequest, LossConfig, Term, register


class CELoss(LossConfig):
    """Hard-label cross-entropy of the student."""

    name: Literal["ce"]


class KDLoss(LossConfig):
    """Hinton KD on logits: ``kd`` is T²·KL(σ(z_t/T) ‖ σ(z_s/T)); ``soft_ce`` the soft cross-entropy (same grad)."""

    name: Literal["kd", "soft_ce"]
    temperature: Temperature = 2.0
    t2_scaling: bool = True
    temperature_on: Literal["both", "teacher"] = "both"


class LogitMSELoss(LossConfig):
    """MSE between student and teacher logits (divided by T)."""

    name: Literal["logit_mse"]
    temperature: Temperature = 1.0


@register("ce")
class CETerm(Term):
    """Hard-label cross-entropy of the student (no teacher needed)."""

    config = CELoss
    reads_teacher = False

    def forward(self, student, teacher, batch):
        return losses.cross_entropy(student.logits, batch["labels"])


@register("kd", "soft_ce")
class KDTerm(Term):
    """Hinton et al. 2015: ``kd`` = T²·KL(σ(z_t/T) ‖ σ(z_s/T)), ``soft_ce`` = −Σ σ(z_t/T)·log σ(z_s/T)."""

    config = KDLoss

    def __init__(self, cfg: KDLoss, teacher=None, student=None):
        super().__init__(cfg, teacher, student)
        self.fn = losses.kl_divergence if cfg.name == "kd" else losses.soft_cross_entropy
        self.kwargs = dict(temperature=cfg.temperature, t2_scaling=cfg.t2_scaling, temperature_on=cfg.temperature_on)

    def forward(self, student, teacher, batch):
        return self.fn(student.logits, teacher.logits, **self.kwargs)

    def cache_request(self):
        return CacheRequest(logits=True)


@register("logit_mse")
class LogitMSETerm(Term):
    """Ba & Caruana 2014: MSE between the logits, each divided by T."""

    config = LogitMSELoss

    def forward(self, student, teacher, batch):
        return losses.logit_mse(student.logits, teacher.logits, temperature=self.cfg.temperature)

    def cache_request(self):
        return CacheRequest(logits=True, raw_logits=True)
