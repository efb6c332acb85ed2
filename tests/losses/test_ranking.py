"""Ranking losses against hand-computed values, and the properties a retrieval loss must have."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdkit import losses
from kdkit.errors import ConfigError


def test_tct_loss_equals_the_hand_computed_kl_with_the_temperature_on_the_teacher_only():
    # p_t = softmax([0.5, 0] / 0.25) = σ(2) = 0.8808, p_s = softmax([1, 0]) = σ(1) = 0.7311
    p_t, p_s = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))
    hand = p_t * math.log(p_t / p_s) + (1 - p_t) * math.log((1 - p_t) / (1 - p_s))
    value = losses.tct_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([0]))
    assert hand == pytest.approx(0.0671307, abs=1e-7)
    assert value.item() == pytest.approx(hand, abs=1e-6)


def test_tct_gamma_mixes_in_the_cross_entropy_to_the_gold_passage():
    student, teacher, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([1])
    kl = losses.tct_loss(student, teacher, labels)
    ce = -math.log(1 - 1 / (1 + math.exp(-1)))  # the gold is column 1, the student's lower score
    mixed = losses.tct_loss(student, teacher, labels, gamma=0.3)
    assert mixed.item() == pytest.approx(0.3 * ce + 0.7 * kl.item(), abs=1e-6)
    assert losses.tct_loss(student, teacher, labels, gamma=1.0).item() == pytest.approx(ce, abs=1e-6)
    with pytest.raises(ConfigError, match="gamma"):
        losses.tct_loss(student, teacher, labels, gamma=1.5)


def test_tct_scale_multiplies_the_student_scores_in_both_terms():
    # a cosine student's scores [0.25, 0] at scale 4 are the dot student's [1, 0] of the hand-computed case
    student, teacher, labels = torch.tensor([[0.25, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([1])
    for gamma in (0.0, 0.4):
        assert losses.tct_loss(student, teacher, labels, gamma=gamma, scale=4.0).item() == pytest.approx(
            losses.tct_loss(student * 4, teacher, labels, gamma=gamma).item(), abs=1e-6)
    assert losses.tct_loss(student, teacher, labels, scale=4.0).item() == pytest.approx(0.0671307, abs=1e-6)


def test_tct_is_zero_when_the_student_matches_the_sharpened_teacher_and_invariant_to_query_order():
    teacher = torch.randn(4, 8)
    assert losses.tct_loss(teacher / 0.25, teacher, torch.arange(4)).item() == pytest.approx(0, abs=1e-6)
    student = torch.randn(4, 8)
    order = torch.tensor([2, 0, 3, 1])
    assert losses.tct_loss(student[order], teacher[order], order).item() == pytest.approx(
        losses.tct_loss(student, teacher, torch.arange(4)).item(), abs=1e-6)


def test_margin_mse_matches_the_hand_value_and_ignores_a_shift_of_the_scores():
    # student margin 1, teacher margin 1.5: (1 - 1.5)² = 0.25
    value = losses.margin_mse(torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([10.0]), torch.tensor([8.5]))
    assert value.item() == pytest.approx(0.25)
    s_pos, s_neg, t_pos, t_neg = torch.randn(4, 6)
    shifted = losses.margin_mse(s_pos + 7, s_neg + 7, t_pos, t_neg)
    assert shifted.item() == pytest.approx(losses.margin_mse(s_pos, s_neg, t_pos, t_neg).item(), abs=1e-5)


def test_in_batch_ce_is_cross_entropy_of_the_scaled_scores():
    scores, labels = torch.randn(3, 6), torch.tensor([0, 1, 2])
    assert losses.in_batch_ce(scores, labels, scale=20).item() == pytest.approx(
        F.cross_entropy(scores * 20, labels).item(), abs=1e-5)


def _brute_maxsim(query, query_mask, passages, passage_mask):
    out = torch.zeros(len(query), len(passages))
    for i in range(len(query)):
        for j in range(len(passages)):
            q = query[i][query_mask[i].bool()]
            d = passages[j][passage_mask[j].bool()]
            out[i, j] = (q @ d.T).max(dim=1).values.sum() if len(d) else 0.0
    return out


def test_maxsim_sums_the_best_match_of_each_query_token_and_ignores_masked_tokens():
    torch.manual_seed(0)
    query, passages = torch.randn(3, 5, 8), torch.randn(4, 7, 8)
    query_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    passage_mask = torch.tensor([[1] * 7, [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0], [0] * 7])
    scores = losses.maxsim(query, query_mask, passages, passage_mask)
    assert scores.shape == (3, 4)
    assert torch.allclose(scores, _brute_maxsim(query, query_mask, passages, passage_mask), atol=1e-5)
    assert (scores[:, 3] == 0).all()  # a passage without a token that counts scores 0
    # padding vectors may hold anything: huge values there change nothing
    noisy = passages.clone()
    noisy[~passage_mask.bool()] = 1e4
    assert torch.allclose(losses.maxsim(query, query_mask, noisy, passage_mask), scores, atol=1e-4)


def test_maxsim_matches_one_hand_computed_case():
    query = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two query tokens
    passage = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.0, 0.2]]])
    # token 1: max(0.5, 1.0, 0.0) = 1.0; token 2: max(0.5, 0.0, 0.2) = 0.5
    assert losses.maxsim(query, torch.ones(1, 2), passage, torch.ones(1, 3)).item() == pytest.approx(1.5)
