"""``task: policy_distillation``: dual policy distillation (Lai et al., IJCAI 2020) on Stable-Baselines3.

No teacher: two learners (``learners``, each an SB3 algorithm, PPO, TD3 or DDPG, with its own environment copy and
seed ``training.seed + i``) take turns. Each round, every learner first learns from ``training.round_steps`` steps
of its own environment (SB3's own update, untouched); then each learner takes ``dpd.steps`` gradient steps on
``dpd.weight``·L_dis (:mod:`kdkit.losses.policy`; a fresh Adam at ``dpd.learning_rate``, never SB3's optimiser)
over ``dpd.batch_size`` states drawn from its peer's recent experience (PPO: the peer's last rollout; TD3/DDPG:
the peer's replay buffer), weighted ``hard`` or ``soft``
(β = ``dpd.beta``) by ξ(s) = V^peer(s) − V^self(s). The learners exchange nothing but those states, the peer's
values and its actions on them. ``dpd.weighting: none`` with one learner is the single-learner baseline, at the same
environment steps per learner (``training.timesteps``).

**Evaluation**: each learner's deterministic policy over ``evaluation.episodes`` episodes of a fresh environment
(seeded apart from training), SB3's ``evaluate_policy``; the primary metric ``return`` is the mean over the
learners of their mean episode return (a plain number, not a fraction), each learner a row of its own. The learning
curve (mean return of each learner's last 10 training episodes after every round, against its environment steps)
is in ``metrics.json`` and ``curve.png``; with ``training.tensorboard`` (the default) TensorBoard event files under
``tensorboard/learner-<i>_0``: SB3's own scalars (``rollout/ep_rew_mean``, ``train/...``) and each distillation
phase's ``dpd/loss`` and ``dpd/peer_better`` (the share of peer states with ξ > 0), against environment steps.

**Output**: ``learner-<i>.zip``, SB3's own format (``PPO.load(path)``); checkpoints every ``training.save_steps``
rounds, so ``--resume`` continues from the last one (each learner's weights, optimiser, step counter and replay
buffer; the environments start a new episode, so a resumed curve continues the same run but is not bit-identical
to an uninterrupted one).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from kdkit.engine.checkpoints import last_complete_checkpoint
from kdkit.engine.loops import check_run_folder, finish_plot, open_run_folder, save_checkpoint
from kdkit.engine.pipeline import RunInterrupted, Task, check_finite_metrics
from kdkit.errors import ConfigError
from kdkit.losses.policy import distillation_weights, peer_advantage, policy_distillation_loss
from kdkit.progress import progress
from kdkit.report.evaluate import count_parameters, measure_latency
from kdkit.report.report import write_report
from kdkit.schema import BatchSize, Count, LearningRate, Seed, Strict
from kdkit.store import digest
from kdkit.tasks import register

TASK = "policy_distillation"


class EnvConfig(Strict):
    """The gymnasium environment id (``Pendulum-v1``, ``HalfCheetah-v5``, ...)."""

    id: str = Field("Pendulum-v1", min_length=1, max_length=256)


class LearnerSpec(Strict):
    """One learner: an SB3 algorithm (``ppo``, ``td3``, ``ddpg``) and keyword arguments for its constructor;
    ``action_noise`` σ (TD3/DDPG only): Gaussian exploration noise N(0, σ²) on each action dimension, SB3's
    ``NormalActionNoise`` (the RL Zoo's MuJoCo setting is 0.1; without it SB3's off-policy learners act
    deterministically after ``learning_starts``)."""

    algo: Literal["ppo", "td3", "ddpg"] = "ppo"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    action_noise: float | None = Field(None, gt=0, le=10)

    @model_validator(mode="after")
    def _noise_for_off_policy(self) -> "LearnerSpec":
        if self.action_noise is not None and self.algo == "ppo":
            raise ConfigError("recipe key 'learners.action_noise': only for td3 / ddpg (PPO explores through its "
                              "Gaussian policy)")
        if "action_noise" in self.hyperparameters:
            raise ConfigError("recipe key 'learners.hyperparameters.action_noise': give the noise's σ as "
                              "learners.action_noise instead")
        return self


class DPDConfig(Strict):
    """The distillation phase: ``weighting`` hard, soft or none (no distillation), ``beta`` [0, 10] of the soft
    form, ``batch_size`` peer states, ``steps`` 1..10⁴ Adam steps per phase at ``learning_rate`` (a fresh Adam over
    the learner's policy each phase, so SB3's own optimiser state is never touched), ``weight`` [0, 10³] on
    L_dis."""

    weighting: Literal["soft", "hard", "none"] = "soft"
    beta: float = Field(0.5, ge=0, le=10)
    batch_size: BatchSize = 512
    steps: int = Field(10, ge=1, le=10_000)
    weight: float = Field(1.0, ge=0, le=1000)
    learning_rate: LearningRate = 3e-4


class PolicyTrainConfig(Strict):
    """``timesteps`` environment steps per learner, in rounds of ``round_steps``; a checkpoint every
    ``save_steps`` rounds; ``seed`` (learner i uses seed + i); ``tensorboard``: TensorBoard event files under
    ``output_dir/tensorboard/`` (needs the ``tensorboard`` package, in ``kdkit[rl]``)."""

    timesteps: Count = 100_000
    round_steps: Count = 2048
    seed: Seed = 0
    save_steps: Count = 10
    tensorboard: bool = True


class PolicyEvaluationConfig(Strict):
    """``episodes`` 1..10⁴ deterministic evaluation episodes per learner; ``dm_alpha`` as in every report."""

    episodes: int = Field(10, ge=1, le=10_000)
    latency_repeats: int = Field(20, gt=0, le=10**6)
    dm_alpha: float = Field(0.5, ge=0, le=1)


class PolicyDistillationRecipe(Strict):
    """A dual-policy-distillation run (or its single-learner baseline): ``env``, ``learners`` (one or two),
    ``dpd``, ``training``, ``evaluation``, ``output_dir``."""

    name: str = Field("distill", min_length=1, max_length=128)
    task: Literal["policy_distillation"] = TASK
    env: EnvConfig = Field(default_factory=EnvConfig)
    learners: list[LearnerSpec] = Field(default_factory=lambda: [LearnerSpec(), LearnerSpec()], min_length=1,
                                        max_length=2)
    dpd: DPDConfig = Field(default_factory=DPDConfig)
    training: PolicyTrainConfig = Field(default_factory=PolicyTrainConfig)
    evaluation: PolicyEvaluationConfig = Field(default_factory=PolicyEvaluationConfig)
    output_dir: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "PolicyDistillationRecipe":
        if self.dpd.weighting != "none" and len(self.learners) != 2:
            raise ConfigError(f"recipe key 'learners': dual policy distillation needs two learners, got "
                              f"{len(self.learners)}; add one, or set dpd.weighting: none for a single learner")
        if self.training.round_steps > self.training.timesteps:
            raise ConfigError(f"recipe key 'training.round_steps': {self.training.round_steps} is more than "
                              f"training.timesteps {self.training.timesteps}")
        for i, spec in enumerate(self.learners):
            n_steps = spec.hyperparameters.get("n_steps", 2048) if spec.algo == "ppo" else 1
            if isinstance(n_steps, int) and n_steps > 0 and self.training.round_steps % n_steps:
                raise ConfigError(f"recipe key 'training.round_steps': {self.training.round_steps} is not a multiple "
                                  f"of learners[{i}]'s PPO n_steps {n_steps} (a rollout is never cut short)")
        return self

    @property
    def generations(self) -> None:  # no born-again generations: the run is the whole recipe
        return None

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")


def seed_of(*parts) -> int:
    return int(digest(parts, size=4), 16)


def distill_phase(learner, peer, cfg: DPDConfig, generator: np.random.Generator) -> dict:
    """One distillation phase of ``learner`` towards ``peer`` (see the module docstring); what it did."""
    obs = learner.observations(peer.states(cfg.batch_size, generator))
    with torch.no_grad():
        advantage = peer_advantage(peer.values(obs), learner.values(obs))
        target = peer.actions(obs)
    weights = distillation_weights(advantage, cfg.weighting, cfg.beta)
    optimizer = torch.optim.Adam(learner.policy.parameters(), lr=cfg.learning_rate)
    loss = None
    for _ in range(cfg.steps):
        loss = cfg.weight * policy_distillation_loss(learner.actions(obs), target, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"loss": float(loss.detach()), "peer_better": float((advantage > 0).float().mean())}


def check_tensorboard() -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (SB3 writes through it)
    except ImportError:
        raise ConfigError("recipe key 'training.tensorboard': the tensorboard package is not installed; "
                          "pip install tensorboard (or 'kdkit[rl]'), or set training.tensorboard: false") from None


def log_to_tensorboard(learners: list, folder: Path) -> None:
    """SB3 writes each learner's own scalars (``rollout/``, ``train/``) to ``folder/learner-<i>_0``."""
    for i, learner in enumerate(learners):
        learner.model.tensorboard_log = str(folder)
        learner.log_name = f"learner-{i}"


def log_phase(learner, phase: dict) -> None:
    """A distillation phase's numbers as ``dpd/<name>`` scalars in the learner's TensorBoard run, at its step."""
    for name, value in phase.items():
        learner.model.logger.record(f"dpd/{name}", value)
    learner.model.logger.dump(step=learner.model.num_timesteps)


def recent_return(learner) -> float | None:
    """Mean return of the learner's last (up to 100, SB3's buffer) finished training episodes."""
    episodes = list(learner.model.ep_info_buffer)[-10:]
    return statistics.fmean(e["r"] for e in episodes) if episodes else None


class _Acting(torch.nn.Module):
    """A learner's deterministic action as a module, for the latency measurement."""

    def __init__(self, learner):
        super().__init__()
        self.policy = learner.policy  # registered, so the measurement finds the device and eval mode
        self.act = learner.actions

    def forward(self, obs):
        return self.act(obs)


def _checkpoint(out: Path, round_: int, learners: list, log: list, seconds: float) -> None:
    """Seal the learners after ``round_`` rounds; ``seconds``: the rounds' wall time so far (over resumes)."""
    def write(folder: Path) -> None:
        for i, learner in enumerate(learners):
            learner.save(folder / f"learner-{i}.zip")

    save_checkpoint(out, round_, write, {"round": round_, "log": log, "seconds": round(seconds, 3)})


def curve_png(path: Path, log: list, labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, label in enumerate(labels):
        points = [(entry["timesteps"][i], entry["returns"][i]) for entry in log if entry["returns"][i] is not None]
        if points:
            ax.plot(*zip(*points), label=label)
    finish_plot(fig, ax, path, "environment steps per learner", "mean return, last 10 training episodes")


@register
class PolicyDistillationTask(Task):
    """Dual policy distillation between two SB3 learners (see the module docstring)."""

    name = TASK
    recipe = PolicyDistillationRecipe
    primary_metric = "return"
    pipeline_tag = "reinforcement-learning"

    def compare_figures(self, board, out):
        from kdkit.tasks.policy_distillation.figures import curves_figure

        path = curves_figure(board, out / "curves.png")
        return [] if path is None else [("learning curves, mean ± std over seeds", path)]

    def run(self, recipe: PolicyDistillationRecipe, *, resume: bool = False, overwrite: bool = False,
            force: bool = False) -> dict:
        from kdkit.tasks.policy_distillation.learners import build_learner, load_learner

        out = check_run_folder(recipe, resume=resume, force=force, overwrite=overwrite)
        cfg = recipe.training
        if cfg.tensorboard:
            check_tensorboard()
        seeds = [cfg.seed + i for i in range(len(recipe.learners))]
        try:
            learners = [build_learner(spec.algo, recipe.env.id, seed, spec.hyperparameters, spec.action_noise)
                        for spec, seed in zip(recipe.learners, seeds)]
        except Exception as err:  # gymnasium's or SB3's refusal of the id or a hyper-parameter, as one line
            raise ConfigError(f"recipe keys 'env' / 'learners': {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
        start, log, before = 0, [], 0.0
        if resume:
            last = last_complete_checkpoint(out / "checkpoints")
            state = json.loads((last / "state.json").read_text())
            start, log, before = state["round"], state["log"], state.get("seconds", 0.0)
            learners = [load_learner(spec.algo, recipe.env.id, seed, last / f"learner-{i}.zip")
                        for i, (spec, seed) in enumerate(zip(recipe.learners, seeds))]
        else:
            open_run_folder(out, recipe, overwrite=overwrite)
        if cfg.tensorboard:
            log_to_tensorboard(learners, out / "tensorboard")
        rounds = math.ceil(cfg.timesteps / cfg.round_steps)
        round_, started = start, time.perf_counter()
        try:
            with progress(total=rounds, initial=start, desc="dual policy distillation", unit="round") as bar:
                for round_ in range(start, rounds):
                    steps = min(cfg.round_steps, cfg.timesteps - round_ * cfg.round_steps)
                    for learner in learners:
                        learner.learn(steps)
                    phases = []
                    if recipe.dpd.weighting != "none":
                        for i, learner in enumerate(learners):
                            generator = np.random.default_rng(seed_of(cfg.seed, "states", round_, i))
                            phases.append(distill_phase(learner, learners[1 - i], recipe.dpd, generator))
                            if cfg.tensorboard:
                                log_phase(learner, phases[-1])
                    log.append({"round": round_ + 1, "timesteps": [lr.model.num_timesteps for lr in learners],
                                "returns": [recent_return(lr) for lr in learners], "distillation": phases})
                    bar.update(1)
                    if (round_ + 1) % cfg.save_steps == 0 or round_ + 1 == rounds:
                        _checkpoint(out, round_ + 1, learners, log, before + time.perf_counter() - started)
        except KeyboardInterrupt as err:
            raise RunInterrupted(round_, last_complete_checkpoint(out / "checkpoints") is not None) from err
        seconds = before + time.perf_counter() - started
        (out / "metrics.json").write_text(json.dumps(log, indent=1) + "\n")
        labels = [f"learner {i} ({spec.algo})" for i, spec in enumerate(recipe.learners)]
        curve_png(out / "curve.png", log, labels)
        for i, learner in enumerate(learners):
            learner.model.save(out / f"learner-{i}.zip")
        report = self._evaluate(recipe, learners, labels, out) | {"train_seconds": round(seconds, 3)}
        write_report(out, report)
        return report

    @staticmethod
    def _evaluate(recipe, learners, labels, out: Path) -> dict:
        from stable_baselines3.common.evaluation import evaluate_policy

        from kdkit.tasks.policy_distillation.learners import make_env

        cfg = recipe.evaluation
        entries = []
        for i, (learner, label) in enumerate(zip(learners, labels)):
            env = make_env(recipe.env.id, seed_of(recipe.training.seed, "evaluation", i))
            returns, _ = evaluate_policy(learner.model, env, n_eval_episodes=cfg.episodes, deterministic=True,
                                         return_episode_rewards=True)
            obs = learner.observations(np.asarray(env.observation_space.sample())[None])
            latency = {"1": measure_latency(_Acting(learner), {"obs": obs}, repeats=cfg.latency_repeats)}
            entries.append({"name": label, "params": count_parameters(learner.policy), "n": cfg.episodes,
                            "metrics": {"return": float(statistics.fmean(returns))},
                            "return_std": float(statistics.pstdev(returns)), "latency": latency,
                            "sb3_file": str(out / f"learner-{i}.zip")})
        kind = "single learner" if recipe.dpd.weighting == "none" and len(learners) == 1 else (
            "independent learners" if recipe.dpd.weighting == "none" else f"DPD, {recipe.dpd.weighting} weighting")
        student = {**entries[0], "name": f"{recipe.learners[0].algo} ({kind})",
                   "metrics": {"return": statistics.fmean(e["metrics"]["return"] for e in entries)}}
        report = {"task": TASK, "primary_metric": "return", "split": f"{cfg.episodes} evaluation episodes",
                  "dm_alpha": cfg.dm_alpha, "student": student, "env": recipe.env.id,
                  "timesteps_per_learner": recipe.training.timesteps, "recipe": recipe.name,
                  "student_dir": str(out)}
        if len(entries) > 1:
            report["variants"] = {f"learner {i}": entry for i, entry in enumerate(entries)}
        check_finite_metrics({"student": student, **report.get("variants", {})}, report["split"])
        return report
