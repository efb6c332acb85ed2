"""Universal-KD loss: hand-computed attention and KL, limits, gradients and batch order."""

from __future__ import annotations

import math

import pytest
import torch

from kdkit.errors import ModelError
from kdkit.losses import ProbeSet, universal_kd


def _log_softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    log_z = top + math.log(sum(math.exp(x - top) for x in xs))
    return [x - log_z for x in xs]


def _kl(target: list[float], student: list[float]) -> float:
    lt, ls = _log_softmax(target), _log_softmax(student)
    return sum(math.exp(a) * (a - b) for a, b in zip(lt, ls))


def test_hand_computed_attention_and_kl():
    s = [[1.0, 0.0], [0.0, 0.5]]  # two student layers
    t = [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # three teacher layers
    expected = []
    for z_s in s:
        scores = [sum(a * b for a, b in zip(z_s, z_t)) for z_t in t]
        alpha = [math.exp(x) for x in _log_softmax(scores)]
        target = [sum(a * z_t[c] for a, z_t in zip(alpha, t)) for c in range(2)]
        expected.append(_kl([x / 2.0 for x in target], [x / 2.0 for x in z_s]))
    value = universal_kd(torch.tensor([s]), torch.tensor([t]), temperature=2.0)
    assert value.item() == pytest.approx(sum(expected) / 2, rel=1e-5)  # the mean over student layers
    scaled = universal_kd(torch.tensor([s]), torch.tensor([t]), temperature=2.0, t2_scaling=True)
    assert scaled.item() == pytest.approx(4 * value.item(), rel=1e-6)


def test_student_equal_to_a_dominant_teacher_layer_gives_a_small_loss():
    teacher = torch.tensor([[[8.0, -8.0, 0.0], [0.1, 0.2, -0.1], [-0.2, 0.0, 0.1]]])
    student = teacher[:, :1].clone()  # one student layer, equal to teacher layer 0, which dominates α
    assert universal_kd(student, teacher).item() < 1e-6
    far = torch.tensor([[[-8.0, 8.0, 0.0]]])
    assert universal_kd(far, teacher).item() > 1.0


def test_reductions_and_batch_order():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3, 4), torch.randn(5, 6, 4)
    per_sample = universal_kd(s, t, reduction="none")
    assert per_sample.shape == (5,) and (per_sample >= 0).all()
    assert universal_kd(s, t).item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    assert universal_kd(s, t, reduction="sum").item() == pytest.approx(per_sample.sum().item(), rel=1e-6)
    order = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(universal_kd(s[order], t[order], reduction="none"), per_sample[order])
    # each sample attends over its own teacher layers only
    assert torch.allclose(universal_kd(s[:1], t[:1], reduction="none"), per_sample[:1])


def test_gradients_reach_the_student_probes_only_and_flow_through_attention():
    torch.manual_seed(0)
    probes = ProbeSet([8, 8], num_classes=3)
    pooled = [torch.randn(4, 8), torch.randn(4, 8)]
    teacher = torch.randn(4, 5, 3, requires_grad=True)
    universal_kd(probes(pooled), teacher).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in probes.parameters())
    assert teacher.grad is None, "teacher probe logits are targets"

    def grads(attention_grad: bool) -> torch.Tensor:
        s = probes(pooled).detach().requires_grad_(True)
        universal_kd(s, teacher, attention_grad=attention_grad).backward()
        return s.grad

    # through α the student's logits also move the target; without it the target is a constant
    assert not torch.allclose(grads(True), grads(False))


def test_shapes_are_checked():
    with pytest.raises(ModelError, match="universal_kd"):
        universal_kd(torch.zeros(2, 3, 4), torch.zeros(2, 5, 3))
    with pytest.raises(ModelError, match="3 probes"):
        ProbeSet([4, 4, 4], 2)([torch.zeros(1, 4)])
