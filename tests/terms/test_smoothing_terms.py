"""Teacher-free terms (label smoothing, confidence penalty, Beta smoothing) and the EMA copy Beta smoothing owns."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from kdkit.api import distill
from tiny import prepare, teacher_source, tokenized as _tokenized
from kdkit.config import parse_recipe
from kdkit.terms.smoothing import BetaSmoothingLoss, ConfidencePenaltyLoss, LabelSmoothingLoss
from kdkit.terms import build_term, signal_spec
from kdkit.terms.smoothing import BetaSmoothingTerm

BETA = [{"name": "ce", "weight": 0.4}, {"name": "beta_smoothing", "weight": 0.6, "a": 3.0}]


def test_teacher_free_terms_build_without_a_teacher_and_need_no_cache():
    student = nn.Linear(2, 2)
    terms = [build_term(LabelSmoothingLoss(name="label_smoothing"), None, student),
             build_term(ConfidencePenaltyLoss(name="confidence_penalty"), None, student),
             build_term(BetaSmoothingLoss(name="beta_smoothing"), None, student)]
    assert not any(t.reads_teacher for t in terms)
    assert terms[2].weight == 0.6 and terms[2].a == 3.0  # the paper's α and a
    assert signal_spec(terms, num_classes=2) == (None, "no loss reads the teacher")


def test_ema_copy_is_frozen_in_eval_mode_and_follows_the_decay_schedule():
    student = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    term = BetaSmoothingTerm(BetaSmoothingLoss(name="beta_smoothing", ema_decay=0.6), None, student)
    assert not any(p.requires_grad for p in term.ema.parameters())
    term.train()
    assert not term.ema.training
    iterates = []
    for _ in range(4):
        with torch.no_grad():
            student[0].weight.add_(torch.randn(3, 3))
        iterates.append(student[0].weight.detach().clone())
        term.after_optimizer_step(student)
    # decays 0, 1/2, then min(2/3, 0.6) and min(3/4, 0.6): a running mean of the first two iterates, then 0.6
    expected = (iterates[0] + iterates[1]) / 2
    for w in iterates[2:]:
        expected = 0.6 * expected + 0.4 * w
    assert torch.allclose(term.ema[0].weight, expected, atol=1e-6)
    assert int(term.ema_updates) == 4


def test_beta_smoothing_end_to_end_ema_in_checkpoints_not_in_export(tiny_recipe, capsys):
    tiny_recipe["losses"] = BETA
    tiny_recipe["training"].update(max_steps=3, save_steps=1, save_total_limit=5)
    recipe = parse_recipe(tiny_recipe)
    prep = prepare(recipe)
    assert teacher_source(prep, _tokenized(prep)["train"]) is None  # no term reads the teacher: it never runs

    report = distill(recipe)

    assert "caching teacher signals" not in capsys.readouterr().out
    assert 0.0 <= report["student"]["metrics"]["ece"] <= 1.0 and "ece" in report["teacher"]["metrics"]
    run = recipe.resolved_output_dir()
    assert "ece (%)" in (run / "report.md").read_text()
    initial = prep.teacher.state_dict()  # student blocks 0 and 2 start as copies of the teacher's
    states = [load_file(run / "checkpoints" / f"checkpoint-{n}" / "model.safetensors") for n in (1, 2, 3)]
    weight = "bert.embeddings.word_embeddings.weight"
    ema_key, student_key = f"terms.1.ema.{weight}", f"student.{weight}"
    assert [int(s["terms.1.ema_updates"]) for s in states] == [1, 2, 3]
    # decay 0 then 1/2: the EMA after step 1 is the student after step 1, after step 2 the mean of both
    assert torch.equal(states[0][ema_key], states[0][student_key])
    assert torch.allclose(states[1][ema_key], (states[0][student_key] + states[1][student_key]) / 2, atol=1e-6)
    assert not torch.equal(states[2][ema_key], initial[weight])
    exported = load_file(run / "student" / "model.safetensors")
    assert not any("ema" in key for key in exported)
    assert torch.equal(exported[weight], states[2][student_key])


@pytest.mark.parametrize("loss", [{"name": "label_smoothing", "epsilon": 0.1},
                                  {"name": "confidence_penalty", "beta": 0.1}])
def test_baselines_train_without_the_teacher(tiny_recipe, loss):
    tiny_recipe["losses"] = [loss]
    tiny_recipe["training"].update(max_steps=2, save_steps=2)
    tiny_recipe["evaluation"]["latency_batch_sizes"] = [1]
    report = distill(tiny_recipe)
    assert 0.0 <= report["student"]["metrics"]["ece"] <= 1.0
