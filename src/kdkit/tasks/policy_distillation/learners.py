"""Stable-Baselines3 learners seen the way dual policy distillation needs them: their states, values and actions.

Each adapter wraps one SB3 algorithm on its own environment copy and seed and exposes, on a batch of observations,
V(s) and π(s) (differentiable for the learner being distilled, fixed for its peer) and the states of its own recent
experience. SB3 does all of the reinforcement learning itself (``learn``); kdkit
only adds the distillation steps between learning phases.

- **PPO** (on-policy): V(s) is the critic's ``predict_values``; π(s) the mean action of the Gaussian policy (a Box
  action space) or the action probabilities (a discrete one); the states are the last rollout buffer (the
  experience collected by the latest ``learn``); the distillation gradient reaches only the actor's weights.
- **TD3 / DDPG** (off-policy, deterministic actors): π(s) is the actor's action; V(s) = Q₁(s, π(s)); the states
  are drawn from the replay buffer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _algorithms() -> dict:
    from stable_baselines3 import DDPG, PPO, TD3

    return {"ppo": PPO, "td3": TD3, "ddpg": DDPG}


class Learner:
    """One SB3 algorithm on its own environment (see the module docstring)."""

    def __init__(self, model):
        self.model = model
        self.log_name = "learner"  # SB3's TensorBoard run name, when the model has a ``tensorboard_log`` folder

    @property
    def policy(self):
        return self.model.policy

    def learn(self, steps: int) -> None:
        """``steps`` more environment steps of the algorithm's own learning (its counters and env carried on)."""
        self.model.learn(total_timesteps=steps, reset_num_timesteps=False, progress_bar=False,
                         tb_log_name=self.log_name)

    def observations(self, batch: np.ndarray) -> torch.Tensor:
        return self.policy.obs_to_tensor(batch)[0].float()

    def experience(self) -> np.ndarray:
        """The observations of the learner's recent experience, ``(N, obs_dim)``."""
        raise NotImplementedError

    def states(self, size: int, generator: np.random.Generator) -> np.ndarray:
        """``size`` states drawn (with replacement) from :meth:`experience`."""
        seen = self.experience()
        return seen[generator.integers(0, len(seen), size)]

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def actions(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        self.model.save(path)


class PPOLearner(Learner):
    def experience(self) -> np.ndarray:
        buffer = self.model.rollout_buffer
        return buffer.observations.reshape(-1, *buffer.obs_shape)

    def values(self, obs):
        return self.policy.predict_values(obs).reshape(-1)

    def actions(self, obs):
        distribution = self.policy.get_distribution(obs).distribution
        if isinstance(distribution, torch.distributions.Categorical):
            return distribution.probs
        return distribution.mean


class ActorCriticLearner(Learner):
    """TD3 and DDPG: deterministic actor, twin (or single) Q critic."""

    def experience(self) -> np.ndarray:
        buffer = self.model.replay_buffer
        end = buffer.buffer_size if buffer.full else buffer.pos
        return buffer.observations[:end].reshape(-1, *buffer.obs_shape)

    def values(self, obs):
        return self.policy.critic.q1_forward(obs, self.policy.actor(obs)).reshape(-1)

    def actions(self, obs):
        return self.policy.actor(obs)

    def save(self, path: Path) -> None:
        super().save(path)
        self.model.save_replay_buffer(path.with_name(path.stem + "-replay.pkl"))


ADAPTERS = {"ppo": PPOLearner, "td3": ActorCriticLearner, "ddpg": ActorCriticLearner}


def make_env(env_id: str, seed: int):
    """One monitored gymnasium environment, seeded (SB3 wraps it in a vectorised env)."""
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make(env_id))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def build_learner(algo: str, env_id: str, seed: int, hyperparameters: dict,
                  action_noise: float | None = None) -> Learner:
    """An SB3 ``algo`` (ppo, td3, ddpg) with ``hyperparameters`` on its own environment copy, seeded; with
    ``action_noise`` σ, Gaussian exploration noise N(0, σ²) per action dimension (off-policy algorithms)."""
    env = make_env(env_id, seed)
    if action_noise is not None:
        from stable_baselines3.common.noise import NormalActionNoise

        size = env.action_space.shape[-1]
        hyperparameters = {**hyperparameters,
                           "action_noise": NormalActionNoise(np.zeros(size), action_noise * np.ones(size))}
    model = _algorithms()[algo]("MlpPolicy", env, seed=seed, verbose=0, device="cpu", **hyperparameters)
    return ADAPTERS[algo](model)


def load_learner(algo: str, env_id: str, seed: int, path: Path) -> Learner:
    """A learner saved by :meth:`Learner.save` (and its replay buffer, for off-policy algorithms), on a fresh copy of
    its environment."""
    model = _algorithms()[algo].load(path, env=make_env(env_id, seed), device="cpu")
    buffer = path.with_name(path.stem + "-replay.pkl")
    if buffer.is_file():
        model.load_replay_buffer(buffer)
    return ADAPTERS[algo](model)
