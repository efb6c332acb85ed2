"""MSD's tensors (Jin et al. 2021): modality saliency, the weighting schemes and the per-modality KD terms, against
hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from kdkit.errors import ConfigError
from kdkit.losses import kl_divergence, modality_saliency, msd_loss, saliency_weights


def test_saliency_is_the_total_variation_change_when_a_modality_is_removed():
    full = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    removed = torch.stack([torch.tensor([[math.log(3.0), 0.0], [2.0, 0.0]]),  # without m0: [.75, .25]; row 2 same
                           torch.tensor([[0.0, 0.0], [0.0, 2.0]])])  # without m1: row 1 same, row 2 flipped
    flipped = 1 / (1 + math.exp(-2)) - 1 / (1 + math.exp(2))  # |p − p'| per class, both classes move as much
    assert modality_saliency(full, removed) == pytest.approx(torch.tensor([[0.25, 0.0], [0.0, flipped]]), abs=1e-6)


def test_the_weighting_schemes_by_hand():
    saliency = torch.tensor([[0.25, 0.75], [0.0, 0.0], [0.1, 0.3]])
    assert saliency_weights(saliency, "equal").tolist() == [[0.5, 0.5]] * 3
    instance = saliency_weights(saliency, "instance")
    assert instance == pytest.approx(torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.25, 0.75]]))  # all 0 -> equal
    population = saliency_weights(saliency, "population", population=torch.tensor([1.0, 3.0]))
    assert population == pytest.approx(torch.tensor([[0.25, 0.75]] * 3))
    assert saliency_weights(saliency, "population", population=torch.zeros(2)).tolist() == [[0.5, 0.5]] * 3


def test_msd_is_the_weighted_sum_of_each_views_kd_and_zero_for_equal_views():
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 3, 4), torch.randn(2, 3, 4, requires_grad=True)
    weights = torch.tensor([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]])
    per_view = [kl_divergence(student[m], teacher[m], 2.0, reduction="none") for m in range(2)]
    expected = weights[:, 0] * per_view[0] + weights[:, 1] * per_view[1]
    assert msd_loss(student, teacher, weights, 2.0, reduction="none").tolist() == pytest.approx(expected.tolist())
    assert msd_loss(student, teacher, weights, 2.0).item() == pytest.approx(expected.mean().item())
    assert msd_loss(teacher, teacher, weights, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    msd_loss(student, teacher, weights).backward()
    assert student.grad[1, 1].abs().sum() == 0 and student.grad[0, 1].abs().sum() > 0  # weight 0 -> no gradient


@pytest.mark.parametrize("call, message", [
    (lambda: saliency_weights(torch.zeros(2, 2), "learned"), "MSD weighting 'learned' is not one of equal, "
                                                             "population, instance"),
    (lambda: saliency_weights(torch.zeros(2, 2), "population"), "MSD weighting 'population' needs the 2 "
                                                                "modalities' mean saliency"),
    (lambda: msd_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3)),
     r"msd_loss: weights \(2, 3\) must be \(B, M\) = \(3, 2\)"),
    (lambda: modality_saliency(torch.zeros(3, 4), torch.zeros(2, 2, 4)),
     r"modality_saliency: removed-modality logits \(2, 2, 4\) must be \(M, \*\(3, 4\)\)"),
])
def test_bad_shapes_and_schemes_are_one_line(call, message):
    with pytest.raises(ConfigError, match="^" + message):
        call()


def test_learned_weights_start_equal_and_their_meta_gradient_matches_finite_differences():
    from torch.func import functional_call

    from kdkit.losses import SaliencyWeightNet, msd_meta_gradient

    torch.manual_seed(0)
    student = torch.nn.Linear(4, 3).double()
    net = SaliencyWeightNet(2).double()
    saliency = torch.rand(5, 2, dtype=torch.double)
    assert torch.allclose(net(saliency), torch.full((5, 2), 0.5, dtype=torch.double))
    views_x = torch.randn(2, 5, 4, dtype=torch.double)
    teacher_views = torch.randn(2, 5, 3, dtype=torch.double)
    meta_x, meta_y = torch.randn(6, 4, dtype=torch.double), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        net.linear.weight.copy_(torch.randn(2, 2))
    params = {n: p.detach().clone().requires_grad_() for n, p in student.named_parameters()}

    def views_at(theta):
        return torch.stack([functional_call(student, theta, (x,)) for x in views_x])

    def meta_logits_at(theta):
        return functional_call(student, theta, (meta_x,))

    net.requires_grad_(True)
    meta, grads = msd_meta_gradient(net, saliency, views_at, params, teacher_views, meta_logits_at, meta_y, 0.5, 2.0)
    eps, w = 1e-6, net.linear.weight
    with torch.no_grad():
        w[0, 1] += eps
    up, _ = msd_meta_gradient(net, saliency, views_at, params, teacher_views, meta_logits_at, meta_y, 0.5, 2.0)
    with torch.no_grad():
        w[0, 1] -= 2 * eps
    down, _ = msd_meta_gradient(net, saliency, views_at, params, teacher_views, meta_logits_at, meta_y, 0.5, 2.0)
    assert grads[0][0, 1].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-4, abs=1e-9)
    assert grads[0].abs().sum() > 0
