"""Terms on attention: TinyBERT attention-score MSE, MiniLM attention KL and value-relation KL.

They read attention maps or hooked Q/K/V projections, which a teacher cache does not store: the teacher runs live.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from kdkit import losses
from kdkit.capture import attention_modules, attention_scores, hidden_size, num_heads
from kdkit.errors import ConfigError
from kdkit.terms.base import LayerMapConfig, LayerMapKind, Needs, PairedTerm, register

_LIVE = "loss '{}' reads attention maps or Q/K/V projections, which are not cached"


class AttentionLoss(LayerMapConfig):
    """``attention_mse``: TinyBERT MSE of pre-softmax scores; ``attention_kl``: MiniLM KL of attention maps."""

    name: Literal["attention_mse", "attention_kl"]


class ValueRelationLoss(LayerMapConfig):
    """MiniLM value-relation KL, by default between the last layers only."""

    name: Literal["value_relation"]
    layer_map: LayerMapKind = "last"
    relation_heads: int | None = Field(None, gt=0, le=4096)


class _AttentionTerm(PairedTerm):
    token_aligned = True
    reads_attention = True
    min_index = 1
    unit = "token"

    def cache_request(self):
        return _LIVE.format(self.name)


@register("attention_kl")
class AttentionKLTerm(_AttentionTerm):
    """MiniLM (Wang et al. 2020): KL between teacher and student attention distributions of mapped blocks."""

    config = AttentionLoss
    eager_attention = True

    def __init__(self, cfg: AttentionLoss, teacher, student):
        super().__init__(cfg, teacher, student)
        self.student_needs = self.teacher_needs = Needs(attentions=True)

    def pair_loss(self, student, teacher, batch, t_layer, s_layer):
        return losses.attention_kl(student.attentions[s_layer - 1], teacher.attentions[t_layer - 1],
                                   mask=batch["attention_mask"])


class _HookedTerm(_AttentionTerm):
    """Terms that read Q/K/V linear outputs of mapped blocks through forward hooks."""

    roles: tuple[str, ...] = ()

    def __init__(self, cfg, teacher, student):
        super().__init__(cfg, teacher, student)
        self.t_names = [attention_modules(teacher)[t - 1] for t, _ in self.pairs]
        self.s_names = [attention_modules(student)[s - 1] for _, s in self.pairs]
        self.t_heads, self.s_heads = num_heads(teacher), num_heads(student)
        self.teacher_needs = Needs(modules={n[r] for n in self.t_names for r in self.roles})
        self.student_needs = Needs(modules={n[r] for n in self.s_names for r in self.roles})

    def forward(self, student, teacher, batch):
        mask = batch["attention_mask"]
        values = [self.hooked_loss(student.modules, teacher.modules, s_n, t_n, mask)
                  for s_n, t_n in zip(self.s_names, self.t_names)]
        return torch.stack(values).mean()


@register("attention_mse")
class AttentionScoreTerm(_HookedTerm):
    """TinyBERT (Jiao et al. 2020): MSE of pre-softmax attention scores Q Kᵀ/√d, rebuilt from the hooked Q and K
    projections."""

    config = AttentionLoss
    roles = ("query", "key")

    def hooked_loss(self, s_mod, t_mod, s_names, t_names, mask):
        s = attention_scores(s_mod[s_names["query"]], s_mod[s_names["key"]], self.s_heads)
        t = attention_scores(t_mod[t_names["query"]], t_mod[t_names["key"]], self.t_heads)
        return losses.attention_score_mse(s, t, mask=mask)


@register("value_relation")
class ValueRelationTerm(_HookedTerm):
    """MiniLM (Wang et al. 2020): KL between value-relation distributions softmax(V Vᵀ/√d) of mapped blocks."""

    config = ValueRelationLoss
    roles = ("value",)

    def __init__(self, cfg: ValueRelationLoss, teacher, student):
        super().__init__(cfg, teacher, student)
        self.relation_heads = cfg.relation_heads or self.s_heads
        for who, model in (("teacher", teacher), ("student", student)):
            if hidden_size(model) % self.relation_heads:
                raise ConfigError(f"loss 'value_relation': relation_heads {self.relation_heads} does not divide the "
                                  f"{who} width {hidden_size(model)}; choose a common divisor")

    def hooked_loss(self, s_mod, t_mod, s_names, t_names, mask):
        return losses.value_relation_kl(s_mod[s_names["value"]], t_mod[t_names["value"]], self.relation_heads,
                                        mask=mask)
