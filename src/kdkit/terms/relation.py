"""CKD (Park et al. 2021) terms: word relation and layer-transforming relation on hidden states.

Relations are compared, not vectors, so widths may differ without a projection.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from kdkit import losses
from kdkit.errors import ConfigError
from kdkit.terms.base import CacheRequest, LayerMapConfig, LayerMapKind, Needs, PairedTerm, register


class RelationLoss(LayerMapConfig):
    """CKD relation terms on hidden states, no projection needed between widths: ``wr_pair`` (word relation, token
    pairs of each mapped layer, averaged over the mapped pairs), ``ltr_pair`` and ``ltr_angle`` (layer
    transforming relation over the stacked mapped layers of each token; ``ltr_angle`` uses all triples of distinct
    layers, so it needs at least 3 mapped layers). Default map: CKD's "emb+skip". ``normaliser``: what each
    relation's sum is divided by, ``valid`` (the rows / distinct triples that carry a relation) or ``authors`` (every
    entry of the relation matrix, as the authors' released code divides; :mod:`kdkit.losses.relation`)."""

    name: Literal["wr_pair", "ltr_pair", "ltr_angle"]
    layer_map: LayerMapKind = "emb_skip"
    normaliser: Literal[losses.relation.NORMALISERS] = "valid"


class WordAngleLoss(RelationLoss):
    """CKD angle word relation (``wr_angle``): token triples whose neighbours lie within ±window//2 of the centre
    (the paper's 21 = ±10)."""

    name: Literal["wr_angle"]
    window: int = Field(21, ge=3, le=2**16)


class _RelationTerm(PairedTerm):
    token_aligned = True

    def __init__(self, cfg, teacher, student):
        super().__init__(cfg, teacher, student)
        self.student_needs = self.teacher_needs = Needs(hidden_states=True)

    def cache_request(self):
        return CacheRequest(hidden=self.teacher_layers())


@register("wr_angle", config=WordAngleLoss)
@register("wr_pair")
class WordRelationTerm(_RelationTerm):
    """CKD word relation (``wr_pair``: pairwise distances, ``wr_angle``: angles of windowed triples) within each
    mapped layer, averaged over the mapped pairs."""

    config = RelationLoss

    def __init__(self, cfg: RelationLoss, teacher, student):
        super().__init__(cfg, teacher, student)
        if cfg.name == "wr_angle":
            self.fn, self.kwargs = losses.word_relation_angle, {"window": cfg.window, "normaliser": cfg.normaliser}
        else:
            self.fn, self.kwargs = losses.word_relation_pair, {"normaliser": cfg.normaliser}

    def pair_loss(self, student, teacher, batch, t_layer, s_layer):
        return self.fn(student.hidden_states[s_layer], teacher.hidden_states[t_layer], mask=batch["attention_mask"],
                       **self.kwargs)


@register("ltr_pair", "ltr_angle")
class LayerRelationTerm(_RelationTerm):
    """CKD layer transforming relation (``ltr_pair``, ``ltr_angle``): the mapped layers of each model stacked in
    map order into ``(B, K, L, D)`` (teacher indices of the map for the teacher, student indices for the student)."""

    config = RelationLoss

    def __init__(self, cfg: RelationLoss, teacher, student):
        super().__init__(cfg, teacher, student)
        self.needed = needed = 3 if cfg.name == "ltr_angle" else 2
        if len(self.pairs) < needed:
            raise ConfigError(f"loss '{cfg.name}' relates at least {needed} aligned layers, but layer_map "
                              f"'{cfg.layer_map}' pairs {len(self.pairs)}: {self.pairs}")
        self.fn = losses.layer_relation_angle if cfg.name == "ltr_angle" else losses.layer_relation_pair
        self.normaliser = cfg.normaliser

    def forward(self, student, teacher, batch):
        pairs = self.present_pairs(student)
        if len(pairs) < self.needed:  # a depth-reduced sub-network keeps too few of the mapped layers to relate
            return student.hidden_states[0].sum() * 0
        s = torch.stack([student.hidden_states[s_l] for _, s_l in pairs], dim=1)
        t = torch.stack([teacher.hidden_states[t_l] for t_l, _ in pairs], dim=1)
        return self.fn(s, t, mask=batch["attention_mask"], normaliser=self.normaliser)
