import pytest
import torch

from kdkit.errors import ConfigError
from kdkit.losses import (beta_smoothing_targets, confidence_penalty, cross_entropy, label_smoothing_targets,
                          soft_target_cross_entropy)


def test_label_smoothing_targets_by_hand():
    targets = label_smoothing_targets(torch.tensor([2, 0]), num_classes=4, epsilon=0.3)
    assert torch.allclose(targets, torch.tensor([[0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]]))


def test_label_smoothing_ignored_positions_get_zero_rows():
    targets = label_smoothing_targets(torch.tensor([[1, -100]]), num_classes=3, epsilon=0.2)
    assert targets.shape == (1, 2, 3)
    assert torch.allclose(targets[0, 0], torch.tensor([0.1, 0.8, 0.1])) and (targets[0, 1] == 0).all()


def test_soft_target_cross_entropy_by_hand_and_equal_to_ce_for_one_hot():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    targets = torch.tensor([[0.2, 0.5, 0.3]])
    log_p = torch.log_softmax(logits, -1)[0]
    expected = -(0.2 * log_p[0] + 0.5 * log_p[1] + 0.3 * log_p[2])
    assert soft_target_cross_entropy(logits, targets).item() == pytest.approx(expected.item())
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 3, 1, 2, 2])
    one_hot = label_smoothing_targets(labels, 4, epsilon=0.0)
    assert torch.allclose(soft_target_cross_entropy(logits, one_hot), cross_entropy(logits, labels))


def test_soft_target_cross_entropy_masks_padding_in_sequences():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [0, -100, -100]])
    targets = label_smoothing_targets(labels, 5, 0.1)
    value = soft_target_cross_entropy(logits, targets, mask=labels != -100)
    logits[0, 2], logits[1, 1:] = float("inf"), float("nan")  # padding never counts, even non-finite
    again = soft_target_cross_entropy(logits, targets, mask=labels != -100)
    assert torch.isfinite(again) and again.item() == pytest.approx(value.item())


def test_confidence_penalty_is_ce_minus_beta_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    p = torch.softmax(logits, -1)
    ce = -(torch.log(p[0, 0]) + torch.log(p[1, 0])) / 2
    entropy = -(p * p.log()).sum(-1).mean()
    assert confidence_penalty(logits, labels, beta=0.5).item() == pytest.approx((ce - 0.5 * entropy).item())
    per_sample = confidence_penalty(logits, labels, beta=0.0, reduction="none")
    assert torch.allclose(per_sample, cross_entropy(logits, labels, reduction="none"))


def test_confidence_penalty_ignores_labels_of_minus_100():
    logits = torch.randn(1, 3, 4)
    full = confidence_penalty(logits[:, :2], torch.tensor([[1, 2]]), beta=0.2)
    padded = confidence_penalty(logits, torch.tensor([[1, 2, -100]]), beta=0.2)
    assert padded.item() == pytest.approx(full.item())


def test_beta_targets_sum_to_one_and_true_class_gets_b():
    confidences = torch.rand(16)
    labels = torch.randint(0, 5, (16,))
    targets = beta_smoothing_targets(confidences, labels, num_classes=5, a=3.0,
                                     generator=torch.Generator().manual_seed(0))
    assert torch.allclose(targets.sum(-1), torch.ones(16))
    b = targets.gather(-1, labels[:, None]).squeeze(-1)
    assert ((b > 0) & (b <= 1)).all()
    # every other class gets (1 − b)/(C − 1)
    others = (targets.sum(-1) - b) / 4
    mask = torch.ones_like(targets, dtype=torch.bool).scatter_(-1, labels[:, None], False)
    assert torch.allclose(targets[mask].view(16, 4), others[:, None].expand(16, 4))


def test_beta_targets_most_confident_sample_gets_the_largest_b():
    confidences = torch.tensor([0.3, 0.9, 0.1, 0.6, 0.5])
    labels = torch.zeros(5, dtype=torch.long)
    targets = beta_smoothing_targets(confidences, labels, 2, a=3.0, generator=torch.Generator().manual_seed(1))
    b = targets[:, 0]
    assert torch.equal(b.argsort(), confidences.argsort())  # b increases with confidence
    assert b.argmax() == 1 and b.argmin() == 2


def test_beta_targets_reproducible_with_a_seeded_generator_and_draws_follow_beta():
    confidences, labels = torch.rand(8), torch.randint(0, 3, (8,))
    first = beta_smoothing_targets(confidences, labels, 3, generator=torch.Generator().manual_seed(7))
    second = beta_smoothing_targets(confidences, labels, 3, generator=torch.Generator().manual_seed(7))
    other = beta_smoothing_targets(confidences, labels, 3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and not torch.equal(first, other)
    # Beta(a, 1) has mean a/(a+1): 0.75 for a = 3
    many = beta_smoothing_targets(torch.rand(20000), torch.zeros(20000, dtype=torch.long), 2, a=3.0,
                                  generator=torch.Generator().manual_seed(0))
    assert many[:, 0].mean().item() == pytest.approx(0.75, abs=0.01)


def test_beta_targets_batch_order_invariant_given_the_draws():
    confidences = torch.tensor([0.2, 0.8, 0.5])
    labels = torch.tensor([0, 1, 2])
    perm = torch.tensor([2, 0, 1])
    t = beta_smoothing_targets(confidences, labels, 3, generator=torch.Generator().manual_seed(3))
    t_perm = beta_smoothing_targets(confidences[perm], labels[perm], 3, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(t[perm], t_perm)


def test_bad_parameters_name_the_value():
    with pytest.raises(ConfigError, match="epsilon 1.0"):
        label_smoothing_targets(torch.tensor([0]), 2, epsilon=1.0)
    with pytest.raises(ConfigError, match="num_classes 1"):
        beta_smoothing_targets(torch.tensor([0.5]), torch.tensor([0]), 1)
    with pytest.raises(ConfigError, match="beta -1"):
        confidence_penalty(torch.zeros(1, 2), torch.tensor([0]), beta=-1)
