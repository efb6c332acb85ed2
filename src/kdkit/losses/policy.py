"""Dual policy distillation (Lai, Wang, Zhou & Huang, IJCAI 2020): two learners distil from each other where the
peer is better.

On states s drawn from the peer's experience, the advantage of the peer is ξ(s) = V^peer(s) − V^self(s). The
learner imitates the peer's action only where the peer is better:

- hard form: w(s) = 1[ξ(s) > 0];
- soft form: w(s) = clip(exp(β·ξ(s)), 0.01, 100), normalised to sum to 1 over the batch (β 0.5–1 in the paper);

and L_dis = Σ_s w(s)·‖π(s) − π^peer(s)‖² (the hard form averaged over the states with ξ > 0), with π the mean action
of a Gaussian policy (PPO) or the action of a deterministic one (DDPG, TD3). The sign follows the paper: the
learner moves towards the peer where the *peer's* value is higher. (The authors' released PPO code computes
V^self − V^peer, the reverse.)
"""

from __future__ import annotations

import torch
from torch import Tensor

WEIGHT_MIN, WEIGHT_MAX = 0.01, 100.0


def peer_advantage(peer_values: Tensor, own_values: Tensor) -> Tensor:
    """ξ(s) = V^peer(s) − V^self(s), per state ``(B,)``."""
    return peer_values.reshape(-1) - own_values.reshape(-1)


def distillation_weights(advantage: Tensor, form: str = "soft", beta: float = 0.5) -> Tensor:
    """Per-state weights ``(B,)`` from ξ: ``hard`` 1[ξ > 0] / (number of such states) (all zero when none),
    ``soft`` clip(exp(β·ξ), 0.01, 100) / Σ; both sum to 1 (or are all zero), so L_dis is a weighted mean."""
    if form == "hard":
        better = (advantage > 0).to(advantage.dtype)
        return better / better.sum().clamp(min=1)
    if form == "soft":
        raw = torch.exp(beta * advantage).clamp(WEIGHT_MIN, WEIGHT_MAX)
        return raw / raw.sum()
    raise ValueError(f"unknown weighting form '{form}'; use 'hard' or 'soft'")


def policy_distillation_loss(actions: Tensor, peer_actions: Tensor, weights: Tensor) -> Tensor:
    """L_dis = Σ_s w(s)·‖π(s) − π^peer(s)‖² for actions ``(B, A)`` (the peer's taken as fixed targets)."""
    return (weights.detach() * (actions - peer_actions.detach()).pow(2).sum(-1)).sum()
