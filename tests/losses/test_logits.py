import math

import pytest
import torch

from kdkit.errors import ConfigError, ModelError
from kdkit.losses import cross_entropy, hinton_kd, kl_divergence, logit_mse, soft_cross_entropy

STUDENT = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
TEACHER = [[3.0, 2.0, 1.0], [1.0, 0.0, -1.0]]
LABELS = [2, 0]


def softmax(row, temperature=1.0):
    exps = [math.exp(z / temperature) for z in row]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def tokens(seed=0, batch=3, length=4, vocab=5):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, length, vocab, generator=g)
    teacher = torch.randn(batch, length, vocab, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])[:batch, :length]
    return student, teacher, mask


PAIRWISE = [kl_divergence, soft_cross_entropy, logit_mse]


def test_kl_by_hand():
    # p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    loss = kl_divergence(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]))
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_matches_explicit_loop(temperature):
    per_sample = [
        temperature**2 * kl(softmax(t, temperature), softmax(s, temperature)) for s, t in zip(STUDENT, TEACHER)
    ]
    out = kl_divergence(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature, reduction="none")
    assert out.tolist() == pytest.approx(per_sample, rel=1e-5)
    unscaled = kl_divergence(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature, t2_scaling=False)
    assert unscaled.item() == pytest.approx(sum(per_sample) / 2 / temperature**2, rel=1e-5)


def test_temperature_on_teacher_only():
    expected = [4.0 * kl(softmax(t, 2.0), softmax(s)) for s, t in zip(STUDENT, TEACHER)]
    out = kl_divergence(torch.tensor(STUDENT), torch.tensor(TEACHER), 2.0, temperature_on="teacher", reduction="none")
    assert out.tolist() == pytest.approx(expected, rel=1e-5)


def test_soft_cross_entropy_is_kl_plus_teacher_entropy_with_same_gradient():
    teacher = torch.tensor(TEACHER)
    entropy = [-sum(p * math.log(p) for p in softmax(t, 2.0)) for t in TEACHER]
    grads, values = [], []
    for loss_fn in (kl_divergence, soft_cross_entropy):
        student = torch.tensor(STUDENT, requires_grad=True)
        loss = loss_fn(student, teacher, 2.0, reduction="none")
        loss.sum().backward()
        values.append(loss.detach())
        grads.append(student.grad)
    assert (values[1] - values[0]).tolist() == pytest.approx([4.0 * h for h in entropy], rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1])


def test_cross_entropy_by_hand():
    expected = [-math.log(softmax(s)[y]) for s, y in zip(STUDENT, LABELS)]
    out = cross_entropy(torch.tensor(STUDENT), torch.tensor(LABELS), reduction="none")
    assert out.tolist() == pytest.approx(expected, rel=1e-6)
    ignored = cross_entropy(torch.tensor(STUDENT), torch.tensor([2, -100]))
    assert ignored.item() == pytest.approx(expected[0], rel=1e-6)


def test_cross_entropy_sequence_matches_loop():
    student, _, mask = tokens()
    labels = torch.tensor([[0, 1, 2, 3], [4, 0, 1, 2], [3, 4, 0, 1]]).masked_fill(mask == 0, -100)
    losses = [
        -math.log(softmax(student[b, i].tolist())[labels[b, i]])
        for b in range(3) for i in range(4) if mask[b, i]
    ]
    assert cross_entropy(student, labels).item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_logit_mse_by_hand():
    expected = [sum(((a - b) / 2.0) ** 2 for a, b in zip(s, t)) / 3 for s, t in zip(STUDENT, TEACHER)]
    out = logit_mse(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature=2.0, reduction="none")
    assert out.tolist() == pytest.approx(expected, rel=1e-6)


def test_hinton_kd_combines_ce_and_scaled_kl():
    alpha, temperature = 0.3, 2.0
    expected = [
        (1 - alpha) * -math.log(softmax(s)[y])
        + alpha * temperature**2 * kl(softmax(t, temperature), softmax(s, temperature))
        for s, t, y in zip(STUDENT, TEACHER, LABELS)
    ]
    out = hinton_kd(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), alpha, temperature)
    assert out.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_hinton_kd_sequence_ignores_unlabelled_tokens():
    student, teacher, mask = tokens()
    labels = torch.ones(3, 4, dtype=torch.long).masked_fill(mask == 0, -100)
    out = hinton_kd(student, teacher, labels, alpha=0.5, temperature=2.0)
    expected = 0.5 * cross_entropy(student, labels) + 0.5 * kl_divergence(student, teacher, 2.0, mask=mask)
    torch.testing.assert_close(out, expected)
    changed = torch.where(mask[..., None].bool(), student, torch.full_like(student, 1e4))
    torch.testing.assert_close(hinton_kd(changed, teacher, labels, alpha=0.5, temperature=2.0), out)


@pytest.mark.parametrize("loss_fn", [kl_divergence, logit_mse])
def test_zero_when_student_equals_teacher(loss_fn):
    student, _, mask = tokens()
    assert loss_fn(student, student.clone(), mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    assert loss_fn(student[:, 0], student[:, 0].clone(), temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss_fn", PAIRWISE)
def test_sequence_mean_is_per_valid_token(loss_fn):
    student, teacher, mask = tokens()
    per_token = torch.stack(
        [loss_fn(student[b, i : i + 1], teacher[b, i : i + 1], 2.0) for b in range(3) for i in range(4) if mask[b, i]]
    )
    torch.testing.assert_close(loss_fn(student, teacher, 2.0, mask=mask), per_token.mean())
    torch.testing.assert_close(loss_fn(student, teacher, 2.0, mask=mask, reduction="sum"), per_token.sum())
    first_sample = per_token[: int(mask[0].sum())].mean()
    torch.testing.assert_close(loss_fn(student, teacher, 2.0, mask=mask, reduction="none")[0], first_sample)


@pytest.mark.parametrize("loss_fn", PAIRWISE)
def test_padding_content_is_ignored_and_empty_rows_are_finite(loss_fn):
    student, teacher, mask = tokens()
    mask[1] = 0
    pad = ~mask.bool()[..., None]
    noisy_student = torch.where(pad, 1e4 * torch.randn_like(student), student).requires_grad_()
    noisy_teacher = torch.where(pad, -1e4 * torch.randn_like(teacher), teacher)
    ref = loss_fn(student, teacher, mask=mask, reduction="none")
    out = loss_fn(noisy_student, noisy_teacher, mask=mask, reduction="none")
    torch.testing.assert_close(out, ref)
    assert out[1].item() == 0.0
    out.sum().backward()
    assert torch.isfinite(noisy_student.grad).all()
    assert (noisy_student.grad[pad.expand_as(student)] == 0).all()


@pytest.mark.parametrize("loss_fn", PAIRWISE)
def test_gradient_reaches_student_only(loss_fn):
    student, teacher, mask = tokens()
    student.requires_grad_()
    loss_fn(student, teacher, 2.0, mask=mask).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and not teacher.requires_grad


@pytest.mark.parametrize("loss_fn", PAIRWISE)
def test_batch_order_invariance(loss_fn):
    student, teacher, mask = tokens()
    perm = torch.tensor([2, 0, 1])
    none = loss_fn(student, teacher, mask=mask, reduction="none")
    torch.testing.assert_close(loss_fn(student[perm], teacher[perm], mask=mask[perm], reduction="none"), none[perm])
    permuted_mean = loss_fn(student[perm], teacher[perm], mask=mask[perm])
    torch.testing.assert_close(permuted_mean, loss_fn(student, teacher, mask=mask))


@pytest.mark.parametrize("loss_fn", PAIRWISE)
def test_classification_none_mean_matches_mean(loss_fn):
    student, teacher, _ = tokens()
    none = loss_fn(student[:, 0], teacher[:, 0], 2.0, reduction="none")
    assert none.shape == (3,)
    torch.testing.assert_close(none.mean(), loss_fn(student[:, 0], teacher[:, 0], 2.0))


def test_invalid_arguments_raise_named_errors():
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    with pytest.raises(ConfigError, match="temperature 0 must be > 0"):
        kl_divergence(s, t, temperature=0)
    with pytest.raises(ConfigError, match="temperature_on 'student' is not one of both, teacher"):
        soft_cross_entropy(s, t, temperature_on="student")
    with pytest.raises(ConfigError, match=r"alpha 1.5 must be in \[0, 1\]"):
        hinton_kd(s, t, torch.tensor(LABELS), alpha=1.5)
    with pytest.raises(ModelError, match="logit_mse: student shape"):
        logit_mse(s, t[:, :2])
