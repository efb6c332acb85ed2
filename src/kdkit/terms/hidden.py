"""Terms on hidden states: TinyBERT/DistilBERT per-layer MSE or cosine, Patient KD on pooled vectors."""

from __future__ import annotations

from typing import Literal

import torch

from kdkit import losses
from kdkit.terms.base import CacheRequest, LayerMapConfig, LayerMapKind, Needs, PairedTerm, register


class HiddenLoss(LayerMapConfig):
    """Hidden-state MSE or cosine per mapped layer; a learned projection is added when widths differ."""

    name: Literal["hidden_mse", "hidden_cosine"]


class PKDLoss(LayerMapConfig):
    """Patient KD: MSE of L2-normalised pooled vectors of mapped layers."""

    name: Literal["pkd"]
    layer_map: LayerMapKind = "skip"
    pooling: Literal["cls", "mean"] = "cls"


@register("hidden_mse", "hidden_cosine")
class HiddenTerm(PairedTerm):
    """TinyBERT (Jiao et al. 2020) MSE(h_s W, h_t) / DistilBERT (Sanh et al. 2019) 1 − cos(h_s, h_t) per mapped
    layer, over real tokens."""

    config = HiddenLoss
    token_aligned = True
    project_widths = True
    unit = "token"

    def __init__(self, cfg: HiddenLoss, teacher, student):
        super().__init__(cfg, teacher, student)
        self.fn = losses.hidden_mse if cfg.name == "hidden_mse" else losses.hidden_cosine
        self.student_needs = self.teacher_needs = Needs(hidden_states=True)

    def pair_loss(self, student, teacher, batch, t_layer, s_layer):
        return self.fn(self.project(student.hidden_states[s_layer]), teacher.hidden_states[t_layer],
                       mask=batch["attention_mask"])

    def cache_request(self):
        return CacheRequest(hidden=self.teacher_layers())


@register("pkd")
class PKDTerm(PairedTerm):
    """Patient KD (Sun et al. 2019) on pooled vectors of the mapped layers (all pairs in one call)."""

    config = PKDLoss
    project_widths = True

    def __init__(self, cfg: PKDLoss, teacher, student):
        super().__init__(cfg, teacher, student)
        self.pooling = cfg.pooling
        self.student_needs = self.teacher_needs = Needs(hidden_states=True)

    def forward(self, student, teacher, batch):
        pairs = self.present_pairs(student)
        s = torch.stack([self.project(student.pooled(s_l, self.pooling)) for _, s_l in pairs], dim=1)
        t = torch.stack([teacher.pooled(t_l, self.pooling) for t_l, _ in pairs], dim=1)
        return losses.pkd_loss(s, t)

    def cache_request(self):
        return CacheRequest(pooled=self.teacher_layers(), pooling=self.pooling)
