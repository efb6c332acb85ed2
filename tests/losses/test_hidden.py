import math

import pytest
import torch

from kdkit.errors import ModelError
from kdkit.losses import Projection, hidden_cosine, hidden_mse, pkd_loss

STUDENT = [[1.0, 0.0, 2.0], [3.0, 4.0, 0.0]]
TEACHER = [[1.0, 1.0, 1.0], [0.0, 4.0, 3.0]]


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def states(seed=0, batch=3, length=4, width=6):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, length, width, generator=g)
    teacher = torch.randn(batch, length, width, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    return student, teacher, mask


MASKED = [hidden_mse, hidden_cosine]


def test_hidden_mse_by_hand():
    # (0 + 1 + 1) / 3 and (9 + 0 + 9) / 3
    out = hidden_mse(torch.tensor(STUDENT), torch.tensor(TEACHER), reduction="none")
    assert out.tolist() == pytest.approx([2.0 / 3, 6.0])


def test_hidden_cosine_by_hand():
    expected = [1 - sum(a * b for a, b in zip(s, t)) / (norm(s) * norm(t)) for s, t in zip(STUDENT, TEACHER)]
    out = hidden_cosine(torch.tensor(STUDENT), torch.tensor(TEACHER), reduction="none")
    assert out.tolist() == pytest.approx(expected, rel=1e-6)
    assert expected[1] == pytest.approx(1 - 16 / 25)


def test_pkd_loss_by_hand():
    def pkd(s, t):
        return sum((a / norm(s) - b / norm(t)) ** 2 for a, b in zip(s, t))

    out = pkd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), reduction="none")
    assert out.tolist() == pytest.approx([pkd(s, t) for s, t in zip(STUDENT, TEACHER)], rel=1e-6)
    # (B, P, D): the mean over P pairs of each sample
    stacked = pkd_loss(torch.tensor([STUDENT]), torch.tensor([TEACHER]), reduction="none")
    assert stacked.item() == pytest.approx(out.mean().item(), rel=1e-6)
    # scale-free: normalising removes the norms
    torch.testing.assert_close(pkd_loss(3 * torch.tensor(STUDENT), torch.tensor(TEACHER), reduction="none"), out)


@pytest.mark.parametrize("loss_fn", [hidden_mse, hidden_cosine, pkd_loss])
def test_zero_when_student_equals_teacher(loss_fn):
    student, _, _ = states()
    assert loss_fn(student, student.clone()).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss_fn", MASKED)
def test_sequence_mean_is_per_valid_token(loss_fn):
    student, teacher, mask = states()
    per_token = torch.stack([loss_fn(student[b, i], teacher[b, i]) for b in range(3) for i in range(4) if mask[b, i]])
    torch.testing.assert_close(loss_fn(student, teacher, mask), per_token.mean())
    torch.testing.assert_close(loss_fn(student, teacher, mask, reduction="sum"), per_token.sum())


@pytest.mark.parametrize("loss_fn", MASKED)
def test_padding_content_is_ignored_and_empty_rows_are_finite(loss_fn):
    student, teacher, mask = states()
    mask[1] = 0
    pad = ~mask.bool()[..., None]
    noisy_student = torch.where(pad, 1e4 * torch.randn_like(student), student).requires_grad_()
    noisy_teacher = torch.where(pad, torch.zeros_like(teacher), teacher)
    out = loss_fn(noisy_student, noisy_teacher, mask, reduction="none")
    torch.testing.assert_close(out, loss_fn(student, teacher, mask, reduction="none"))
    assert out[1].item() == 0.0
    out.sum().backward()
    assert torch.isfinite(noisy_student.grad).all()


@pytest.mark.parametrize("loss_fn", MASKED)
def test_gradient_reaches_student_only_and_batch_order_is_irrelevant(loss_fn):
    student, teacher, mask = states()
    student.requires_grad_()
    none = loss_fn(student, teacher, mask, reduction="none")
    none.sum().backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    perm = torch.tensor([1, 2, 0])
    torch.testing.assert_close(loss_fn(student[perm], teacher[perm], mask[perm], reduction="none"), none[perm])
    torch.testing.assert_close(loss_fn(student[perm], teacher[perm], mask[perm]), loss_fn(student, teacher, mask))


@pytest.mark.parametrize("loss_fn", [hidden_mse, hidden_cosine, pkd_loss])
def test_pooled_none_mean_matches_mean(loss_fn):
    student, teacher, _ = states()
    none = loss_fn(student[:, 0], teacher[:, 0], reduction="none")
    assert none.shape == (3,)
    torch.testing.assert_close(none.mean(), loss_fn(student[:, 0], teacher[:, 0]))


def test_projection_maps_student_width_to_teacher_width():
    student, teacher, mask = states(width=6)
    projection = Projection(6, 8)
    assert isinstance(projection, torch.nn.Linear) and projection.weight.shape == (8, 6)
    loss = hidden_mse(projection(student), torch.randn(3, 4, 8), mask)
    loss.backward()
    assert projection.weight.grad.abs().sum() > 0


def test_width_mismatch_names_shapes():
    with pytest.raises(ModelError, match=r"hidden_mse: student shape \(2, 3\) does not match teacher shape \(2, 4\)"):
        hidden_mse(torch.zeros(2, 3), torch.zeros(2, 4))
