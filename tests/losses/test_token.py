"""Token-level divergences against hand-computed values, and their properties: 0 when equal, JSD symmetric at
β = 0.5, padding ignored without NaN, and the top-k (+ tail bucket) teacher equal to the dense one when k = V."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdkit.errors import ConfigError, ModelError
from kdkit.losses.token import (DIVERGENCES, divergence_from_log_probs, token_divergence, topk_log_probs,
                                topk_token_divergence)

P = [0.7, 0.2, 0.1]  # teacher
Q = [0.5, 0.3, 0.2]  # student


def _log(values):
    return torch.tensor(values).log()


def test_each_divergence_matches_the_hand_computed_value():
    forward = sum(p * math.log(p / q) for p, q in zip(P, Q))
    reverse = sum(q * math.log(q / p) for p, q in zip(P, Q))
    m = [0.3 * p + 0.7 * q for p, q in zip(P, Q)]
    jsd = 0.3 * sum(p * math.log(p / x) for p, x in zip(P, m)) + 0.7 * sum(q * math.log(q / x) for q, x in zip(Q, m))
    assert forward == pytest.approx(0.0851, abs=1e-4)  # 0.7 ln 1.4 + 0.2 ln(2/3) + 0.1 ln 0.5
    expected = {"forward_kl": forward, "reverse_kl": reverse, "jsd": jsd, "tvd": 0.2}
    for divergence, value in expected.items():
        got = divergence_from_log_probs(_log(P), _log(Q), divergence, beta=0.3)
        assert got.item() == pytest.approx(value, abs=1e-6), divergence


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_zero_when_equal_and_positive_otherwise(divergence):
    logits = torch.randn(2, 5, 11)
    assert token_divergence(logits, logits.clone(), divergence=divergence, temperature=2.0).item() == pytest.approx(
        0, abs=1e-6)
    assert token_divergence(logits, torch.randn(2, 5, 11), divergence=divergence).item() > 1e-4


def test_jsd_is_symmetric_at_half_and_reverse_kl_is_forward_kl_swapped():
    student, teacher = torch.randn(3, 4, 9), torch.randn(3, 4, 9)
    assert token_divergence(student, teacher, divergence="jsd", beta=0.5).item() == pytest.approx(
        token_divergence(teacher, student, divergence="jsd", beta=0.5).item(), abs=1e-6)
    assert token_divergence(student, teacher, divergence="jsd", beta=0.2).item() != pytest.approx(
        token_divergence(teacher, student, divergence="jsd", beta=0.2).item(), abs=1e-4)
    assert token_divergence(student, teacher, divergence="reverse_kl").item() == pytest.approx(
        token_divergence(teacher, student, divergence="forward_kl").item(), abs=1e-6)
    assert token_divergence(student, teacher, divergence="jsd", beta=0.5).item() <= math.log(2)
    for beta in (0.0, 1.0):
        with pytest.raises(ConfigError, match="beta"):
            token_divergence(student, teacher, divergence="jsd", beta=beta)


def test_temperature_softens_both_sides_and_t2_scales():
    student, teacher = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    soft = token_divergence(student, teacher, temperature=2.0)
    assert soft.item() == pytest.approx(token_divergence(student / 2, teacher / 2).item(), abs=1e-6)
    assert token_divergence(student, teacher, temperature=2.0, t2_scaling=True).item() == pytest.approx(
        4 * soft.item(), abs=1e-5)
    with pytest.raises(ConfigError, match="temperature"):
        token_divergence(student, teacher, temperature=0.0)
    with pytest.raises(ConfigError, match="divergence 'kl'"):
        token_divergence(student, teacher, divergence="kl")


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_padding_never_counts_and_never_makes_nan(divergence):
    student = torch.randn(2, 4, 6, requires_grad=True)
    teacher = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    junk_student, junk_teacher = student.detach().clone(), teacher.clone()
    junk_teacher[mask == 0] = torch.tensor([1e4, -1e4, 0, 0, 0, 0])  # a one-hot row: log p has −inf-like entries
    junk_student[mask == 0] = 50.0
    value = token_divergence(student, teacher, mask, divergence)
    # each valid token once, divided by the 5 valid tokens of the batch
    per_token = divergence_from_log_probs(F.log_softmax(teacher, -1), F.log_softmax(student, -1), divergence)
    assert value.item() == pytest.approx(per_token[mask.bool()].sum().item() / 5, abs=1e-6)
    padded = token_divergence(student.detach() * mask[..., None] + junk_student * (1 - mask[..., None]),
                              teacher * mask[..., None] + junk_teacher * (1 - mask[..., None]), mask, divergence)
    assert padded.item() == pytest.approx(value.item(), abs=1e-6)
    value.backward()
    assert torch.isfinite(student.grad).all() and (student.grad[mask == 0] == 0).all()
    per_sample = token_divergence(student, teacher, mask, divergence, reduction="none")
    assert per_sample.shape == (2,) and torch.isfinite(per_sample).all()


def _topk(teacher_logits, k):
    logp = F.log_softmax(teacher_logits, -1)
    top = logp.topk(k, dim=-1)
    tail = logp.scatter(-1, top.indices, -math.inf).logsumexp(-1)
    return top.values, top.indices, tail


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_with_k_equal_to_the_vocabulary_is_the_dense_loss(divergence, temperature):
    student = torch.randn(2, 3, 8, requires_grad=True)
    teacher = torch.randn(2, 3, 8)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    dense = token_divergence(student, teacher, mask, divergence, temperature, beta=0.3)
    cached = topk_token_divergence(student, *_topk(teacher, 8), mask, divergence, temperature, beta=0.3)
    assert cached.item() == pytest.approx(dense.item(), abs=1e-5)
    cached.backward()
    assert torch.isfinite(student.grad).all()


def test_topk_teacher_is_exact_on_its_k_tokens_with_the_tail_spread_evenly():
    teacher = torch.randn(4, 5, 30) * 3
    values, indices, tail = _topk(teacher, 5)
    log_p = topk_log_probs(values, indices, tail, 30)
    assert log_p.shape == (4, 5, 30)
    assert torch.allclose(log_p.logsumexp(-1), torch.zeros(4, 5), atol=1e-5)
    assert torch.allclose(log_p.gather(-1, indices).exp(), values.exp(), atol=1e-6)  # the teacher's own probabilities
    others = log_p.scatter(-1, indices, math.inf)
    smallest = others.min(-1).values
    assert torch.allclose(smallest.exp() * 25, tail.exp(), atol=1e-6)  # the tail, split evenly over 25 tokens
    student = torch.randn(4, 5, 30)
    assert topk_token_divergence(student, values, indices, tail, divergence="jsd").item() == pytest.approx(
        token_divergence(student, log_p, divergence="jsd").item(), abs=1e-6)


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd"])
def test_a_student_on_a_junk_token_outside_the_top_k_pays_for_it(divergence):
    """A spread teacher (best token 0.10, tail 0.40 over 990 tokens): a student sure of the teacher's best token
    must score better than one sure of any token in the tail (merging the tail into one bucket reverses this)."""
    vocab, k = 1000, 10
    probs = torch.full((vocab,), 0.4 / (vocab - k))
    probs[:k] = torch.linspace(0.10, 0.02, k) / torch.linspace(0.10, 0.02, k).sum() * 0.6
    values, indices, tail = _topk(probs.log()[None, None], k)
    on_best, on_junk = torch.full((1, 1, vocab), -30.0), torch.full((1, 1, vocab), -30.0)
    on_best[..., 0] = 30.0
    on_junk[..., 500] = 30.0
    best = topk_token_divergence(on_best, values, indices, tail, divergence=divergence)
    junk = topk_token_divergence(on_junk, values, indices, tail, divergence=divergence)
    assert best < junk


def test_topk_shapes_are_checked():
    student = torch.randn(2, 3, 8)
    values, indices, tail = _topk(torch.randn(2, 3, 8), 4)
    with pytest.raises(ModelError, match="do not fit"):
        topk_token_divergence(student, values, indices, tail[:, :2])
    with pytest.raises(ModelError, match="exceeds"):
        topk_token_divergence(torch.randn(2, 3, 3), values, indices, tail)
