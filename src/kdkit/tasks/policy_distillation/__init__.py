"""Dual policy distillation (Lai et al. 2020) for reinforcement learning, on Stable-Baselines3: a task with its own
loop (see :mod:`.task`). Stable-Baselines3 and gymnasium are the optional extra ``kdkit[rl]``."""

from kdkit.tasks.policy_distillation.task import PolicyDistillationRecipe, PolicyDistillationTask

__all__ = ["PolicyDistillationRecipe", "PolicyDistillationTask"]
