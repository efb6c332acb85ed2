"""Dual policy distillation's loss: the sign of ξ, the hard and soft weights and the loss, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kdkit.losses.policy import distillation_weights, peer_advantage, policy_distillation_loss


def test_advantage_is_the_peers_value_minus_ones_own():
    xi = peer_advantage(torch.tensor([[3.0], [1.0], [2.0]]), torch.tensor([1.0, 2.0, 2.0]))
    assert xi.tolist() == [2.0, -1.0, 0.0]  # the paper's sign: positive where the peer is better


def test_hard_and_soft_weights_by_hand():
    xi = torch.tensor([2.0, -1.0, 0.0])
    assert distillation_weights(xi, "hard").tolist() == [1.0, 0.0, 0.0]  # only where ξ > 0 (ξ = 0 is not better)
    assert distillation_weights(torch.tensor([1.0, 3.0, -2.0]), "hard").tolist() == [0.5, 0.5, 0.0]
    assert distillation_weights(torch.tensor([-1.0, -2.0]), "hard").tolist() == [0.0, 0.0]
    raw = [math.exp(1.0), math.exp(-0.5), 1.0]  # exp(β·ξ), β = 0.5
    assert distillation_weights(xi, "soft", beta=0.5).tolist() == pytest.approx([r / sum(raw) for r in raw])
    clipped = distillation_weights(torch.tensor([20.0, -20.0]), "soft", beta=1.0)  # clip to [0.01, 100]
    assert clipped.tolist() == pytest.approx([100 / 100.01, 0.01 / 100.01])
    with pytest.raises(ValueError, match="unknown weighting form 'x'"):
        distillation_weights(xi, "x")


def test_loss_is_the_weighted_squared_action_distance_and_zero_for_equal_policies():
    actions = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    peer = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    weights = torch.tensor([0.25, 0.75])
    loss = policy_distillation_loss(actions, peer, weights)
    assert loss.item() == pytest.approx(0.25 * 1 + 0.75 * 2)
    loss.backward()
    assert actions.grad.flatten().tolist() == pytest.approx([0.5, 0.0, -1.5, -1.5])  # 2·w·(π − π_peer)
    assert policy_distillation_loss(peer, peer, weights).item() == 0.0
