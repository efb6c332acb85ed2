"""A new loss in one file: logit cosine distillation, 1 − cos(z_s, z_t), registered where it is defined.

Once registered, recipes accept it (its typed config validates its keys), error messages and ``kdkit info`` list
it, the teacher cache stores what it asks for, and its value is logged as ``loss_logit_cosine`` — with no other
file touched. Registered in a fixture, so the rest of the suite never sees it.
"""

from __future__ import annotations

import json
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field

from kdkit import api, terms
from kdkit.config import parse_recipe
from kdkit.errors import ConfigError
from kdkit.terms import CacheRequest, LossConfig, Term, signal_spec
from tiny import run_cli


class LogitCosineLoss(LossConfig):
    """1 − cos(z_s, z_t) of the logit vectors, mean over examples."""

    name: Literal["logit_cosine"]
    eps: float = Field(1e-8, gt=0)


class LogitCosineTerm(Term):
    config = LogitCosineLoss

    def forward(self, student, teacher, batch):
        return (1 - F.cosine_similarity(student.logits.float(), teacher.logits.float(), dim=-1,
                                        eps=self.cfg.eps)).mean()

    def cache_request(self):
        return CacheRequest(logits=True, raw_logits=True)


@pytest.fixture
def logit_cosine():
    terms.register("logit_cosine")(LogitCosineTerm)
    yield
    del terms.TERMS["logit_cosine"], terms.CONFIGS["logit_cosine"]


def test_registered_loss_is_validated_listed_cached_and_logged(logit_cosine, tiny_recipe, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))  # its own teacher cache, built here
    tiny_recipe["losses"] = [{"name": "ce", "weight": 0.5}, {"name": "logit_cosine", "weight": 0.5}]
    recipe = parse_recipe(tiny_recipe)
    assert isinstance(recipe.losses[1], LogitCosineLoss)
    term = terms.build_term(recipe.losses[1], torch.nn.Linear(1, 1), torch.nn.Linear(1, 1))
    spec, _ = signal_spec([term], num_classes=2)
    assert spec.logits == "dense"
    report = api.distill(recipe)
    assert "caching teacher signals (dense logits" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    values = [entry["loss_logit_cosine"] for entry in history if "loss_logit_cosine" in entry]
    assert values and all(0.0 <= v <= 2.0 for v in values)
    assert 0.0 <= report["student"]["metrics"]["accuracy"] <= 1.0

    with pytest.raises(ConfigError, match=r"recipe key 'losses\[1\].eps'"):
        parse_recipe({**tiny_recipe, "losses": [{"name": "ce"}, {"name": "logit_cosine", "eps": -1}]})
    with pytest.raises(ConfigError, match="unknown loss 'logit_cos'; valid: .*logit_cosine"):
        parse_recipe({**tiny_recipe, "losses": [{"name": "logit_cos"}]})
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0 and "logit_cosine" in out


def test_the_loss_is_zero_when_student_equals_teacher(logit_cosine):
    from kdkit.capture import Representations

    logits = torch.randn(4, 3)
    term = LogitCosineTerm(LogitCosineLoss(name="logit_cosine"))
    same = term(Representations(logits=logits), Representations(logits=logits.clone()), {})
    opposite = term(Representations(logits=logits), Representations(logits=-logits), {})
    assert same.item() == pytest.approx(0.0, abs=1e-6) and opposite.item() == pytest.approx(2.0, abs=1e-6)
