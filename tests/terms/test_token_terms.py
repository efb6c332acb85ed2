"""The generation task's terms (``nll``, ``token_kd``): target-token masking and per-step normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdkit.capture import Representations
from kdkit.errors import ModelError
from kdkit.losses import token_divergence
from kdkit.terms import count_units
from kdkit.terms.token import NLLLoss, NLLTerm, TokenKDLoss, TokenKDTerm


def batch_of(labels: list[list[int]]) -> dict:
    return {"labels": torch.tensor(labels)}


def test_nll_is_the_mean_over_target_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    batch = batch_of([[1, 2, -100], [4, -100, -100]])
    value = NLLTerm(NLLLoss(name="nll"))(Representations(logits=logits), None, batch)
    by_hand = -(F.log_softmax(logits[0, 0], -1)[1] + F.log_softmax(logits[0, 1], -1)[2]
                + F.log_softmax(logits[1, 0], -1)[4]) / 3
    assert value == pytest.approx(by_hand.item(), rel=1e-6)
    assert count_units("target", batch) == 3


def test_token_kd_ignores_unlabelled_positions():
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    batch = batch_of([[1, 2, -100], [4, -100, -100]])
    term = TokenKDTerm(TokenKDLoss(name="token_kd", divergence="reverse_kl", temperature=2.0))
    value = term(Representations(logits=student), Representations(logits=teacher), batch)
    changed = teacher.clone()
    changed[0, 2] += 50.0  # an unlabelled position: no effect
    assert term(Representations(logits=student), Representations(logits=changed), batch) == pytest.approx(value.item())
    keep = batch["labels"] != -100
    expected = token_divergence(student[keep][None], teacher[keep][None], divergence="reverse_kl", temperature=2.0)
    assert value == pytest.approx(expected.item(), rel=1e-6)


def test_split_batches_weighted_by_target_share_equal_the_whole():
    """What the trainer does with a step split into micro-batches: each term's mean times its share of the step's
    target tokens sums to the whole batch's mean, however unequal the completions."""
    torch.manual_seed(2)
    student, teacher = torch.randn(4, 3, 7), torch.randn(4, 3, 7)
    labels = [[1, 2, 3], [4, -100, -100], [5, 6, -100], [0, -100, -100]]
    term = TokenKDTerm(TokenKDLoss(name="token_kd", divergence="jsd", beta=0.3))
    whole = term(Representations(logits=student), Representations(logits=teacher), batch_of(labels))
    total = count_units("target", batch_of(labels))
    parts = 0.0
    for rows in (slice(0, 1), slice(1, 4)):
        part = batch_of(labels[rows])
        parts += count_units("target", part) / total * term(Representations(logits=student[rows]),
                                                            Representations(logits=teacher[rows]), part)
    assert parts == pytest.approx(whole.item(), rel=1e-6)


def test_logits_that_do_not_cover_the_labels_are_refused():
    term = NLLTerm(NLLLoss(name="nll"))
    with pytest.raises(ModelError, match="labelled positions"):
        term(Representations(logits=torch.randn(2, 4, 5)), None, batch_of([[1, 2, -100], [4, -100, -100]]))
