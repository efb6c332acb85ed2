"""CKD relation terms end to end: a narrower student distilled with all four terms from the cached teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdkit import api
from kdkit.config import parse_recipe
from kdkit.terms.relation import LayerRelationTerm, WordRelationTerm
from kdkit.errors import ConfigError

CKD_TERMS = [
    {"name": "kd", "temperature": 4.0, "t2_scaling": False},
    {"name": "wr_pair", "weight": 100.0},
    {"name": "wr_angle", "weight": 1000.0, "window": 5},
    {"name": "ltr_pair", "weight": 100.0},
    {"name": "ltr_angle", "weight": 1000.0},
]
NARROW = {"init": "config", "overrides": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                          "intermediate_size": 20}}


def _logged(run_dir):
    return [h for h in json.loads((run_dir / "metrics.json").read_text()) if "loss" in h]


def test_ckd_terms_run_on_a_narrow_student_from_the_teacher_cache(tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))
    tiny_recipe["student"] = NARROW
    tiny_recipe["losses"] = CKD_TERMS
    tiny_recipe["training"].update(max_steps=4, logging_steps=2, save_steps=4)
    api.distill(tiny_recipe)
    out = capsys.readouterr().out
    assert "teacher runs live" not in out and "caching teacher signals" in out
    caches = list((tmp_path / "cache" / "signals").iterdir())
    assert len(caches) == 1
    spec = json.loads((caches[0] / "manifest.json").read_text())["meta"]["spec"]
    assert spec["hidden_layers"] == [0, 2, 4]  # emb+skip, 4-layer teacher -> 2-layer student
    cached = _logged(tmp_path / "run")
    assert len(cached) == 2
    for entry in cached:
        for name in ("kd", "wr_pair", "wr_angle", "ltr_pair", "ltr_angle"):
            assert math.isfinite(entry[f"loss_{name}"]) and entry[f"loss_{name}"] > 0, name

    api.distill(dict(tiny_recipe, output_dir=str(tmp_path / "live"), teacher=dict(tiny_recipe["teacher"], cache="off")))
    for live, from_cache in zip(_logged(tmp_path / "live"), cached, strict=True):
        for key in live:
            if key.startswith("loss"):  # the cache keeps hidden states in float16
                assert from_cache[key] == pytest.approx(live[key], rel=1e-2), key


def test_relation_terms_pair_and_stack_the_mapped_layers(tiny_recipe):
    from tiny import prepare

    tiny_recipe["student"] = NARROW
    tiny_recipe["losses"] = CKD_TERMS[1:] + [{"name": "ltr_pair", "layer_map": "pairs", "pairs": [[4, 2], [1, 1]]}]
    terms = prepare(parse_recipe(tiny_recipe)).module.terms
    wr_pair, wr_angle, ltr_pair, ltr_angle, explicit = terms
    assert isinstance(wr_angle, WordRelationTerm) and wr_angle.kwargs == {"window": 5, "normaliser": "valid"}
    assert isinstance(ltr_angle, LayerRelationTerm)
    assert wr_pair.pairs == ltr_pair.pairs == [(0, 0), (2, 1), (4, 2)]
    assert explicit.pairs == [(4, 2), (1, 1)]
    assert all(t.projection is None for t in terms)  # relations need no projection between widths


def test_ltr_angle_refuses_fewer_than_three_layers(tiny_recipe):
    from tiny import prepare

    tiny_recipe["losses"] = [{"name": "ltr_angle", "layer_map": "pairs", "pairs": [[0, 0], [4, 2]]}]
    with pytest.raises(ConfigError, match="ltr_angle.*at least 3 aligned layers"):
        prepare(parse_recipe(tiny_recipe))


def test_window_is_only_a_key_of_wr_angle():
    with pytest.raises(ConfigError, match="window"):
        parse_recipe({"data": {"dataset": "x"}, "teacher": {"model": "m"}, "student": {"layers": [0]},
                      "losses": [{"name": "wr_pair", "window": 5}]})
    with pytest.raises(ConfigError, match="window"):
        parse_recipe({"data": {"dataset": "x"}, "teacher": {"model": "m"}, "student": {"layers": [0]},
                      "losses": [{"name": "wr_angle", "window": 1}]})


def test_the_authors_normaliser_reaches_every_relation_function(tiny_recipe, monkeypatch):
    from tiny import prepare

    from kdkit import losses

    seen = []
    for fn in ("word_relation_pair", "word_relation_angle", "layer_relation_pair", "layer_relation_angle"):
        real = getattr(losses, fn)
        monkeypatch.setattr(losses, fn, lambda *a, _real=real, _fn=fn, **kw: seen.append((_fn, kw)) or _real(*a, **kw))
    tiny_recipe["student"] = NARROW
    tiny_recipe["losses"] = [dict(t, normaliser="authors") for t in CKD_TERMS[1:]]
    prep = prepare(parse_recipe(tiny_recipe))
    ids = torch.randint(5, prep.teacher.config.vocab_size, (2, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    teacher, student = (m(**batch, output_hidden_states=True) for m in (prep.teacher, prep.module.student))
    values = [float(term(student, teacher, batch)) for term in prep.module.terms]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert {fn for fn, kw in seen if kw.get("normaliser") == "authors"} == {
        "word_relation_pair", "word_relation_angle", "layer_relation_pair", "layer_relation_angle"}
    assert all(kw.get("normaliser") == "authors" for _, kw in seen)
    with pytest.raises(ConfigError, match="normaliser"):
        parse_recipe(dict(tiny_recipe, losses=[{"name": "wr_pair", "normaliser": "paper"}]))
