"""Dual policy distillation on Stable-Baselines3: end to end on Pendulum and CartPole in seconds, a zero-weight
distillation that leaves SB3's own updates exactly as they are, resume, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from kdkit.config import load_recipe
from kdkit.engine.pipeline import RunInterrupted
from kdkit.errors import ConfigError
from kdkit.tasks import get_task

stable_baselines3 = pytest.importorskip("stable_baselines3")

PPO_FAST = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}


def _recipe(tmp_path, **changes) -> dict:
    recipe = {"task": "policy_distillation", "name": "dpd", "output_dir": str(tmp_path / "run"),
              "env": {"id": "Pendulum-v1"},
              "learners": [{"algo": "ppo", "hyperparameters": PPO_FAST}, {"algo": "ppo", "hyperparameters": PPO_FAST}],
              "dpd": {"weighting": "soft", "batch_size": 32, "steps": 2},
              "training": {"timesteps": 256, "round_steps": 128, "save_steps": 1},
              "evaluation": {"episodes": 1, "latency_repeats": 1}}
    for key, value in changes.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) else value
    return recipe


def test_dpd_end_to_end_writes_sb3_policies_curves_and_a_report(tmp_path):
    report = get_task("policy_distillation").run(load_recipe(_recipe(tmp_path)))
    run = tmp_path / "run"
    assert report["primary_metric"] == "return" and set(report["variants"]) == {"learner 0", "learner 1"}
    returns = [report["variants"][k]["metrics"]["return"] for k in ("learner 0", "learner 1")]
    assert report["student"]["metrics"]["return"] == pytest.approx(sum(returns) / 2)
    log = json.loads((run / "metrics.json").read_text())
    assert [entry["timesteps"] for entry in log] == [[128, 128], [256, 256]]
    assert all(len(entry["distillation"]) == 2 and 0 <= entry["distillation"][0]["peer_better"] <= 1
               for entry in log)
    model = stable_baselines3.PPO.load(run / "learner-1.zip")
    assert model.num_timesteps == 256
    assert (run / "curve.png").stat().st_size > 1000 and "return" in (run / "report.md").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for i in (0, 1):  # SB3's own scalars and the distillation phases', one TensorBoard run per learner
        events = EventAccumulator(str(run / "tensorboard" / f"learner-{i}_0")).Reload()
        tags = events.Tags()["scalars"]
        assert {"rollout/ep_rew_mean", "train/loss", "dpd/loss", "dpd/peer_better"} <= set(tags)
        assert [e.step for e in events.Scalars("dpd/loss")] == [128, 256]
        assert [e.value for e in events.Scalars("dpd/peer_better")] == pytest.approx(
            [entry["distillation"][i]["peer_better"] for entry in log])


def test_tensorboard_missing_is_a_one_line_error_before_anything_is_written(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match="training.tensorboard': the tensorboard package is not installed"):
        get_task("policy_distillation").run(load_recipe(_recipe(tmp_path)))
    assert not (tmp_path / "run").exists()
    report = get_task("policy_distillation").run(load_recipe(_recipe(tmp_path, training={"tensorboard": False})))
    assert report["student"]["metrics"]["return"] is not None and not (tmp_path / "run" / "tensorboard").exists()


def test_a_zero_weight_distillation_leaves_sb3s_updates_unchanged(tmp_path):
    """Two learners with the distillation phase at weight 0 end exactly as two independent SB3 learners (same seeds,
    same steps): kdkit only adds its phase between SB3's own updates and never touches SB3's optimiser."""
    task = get_task("policy_distillation")
    task.run(load_recipe(_recipe(tmp_path / "a", dpd={"weight": 0.0})))
    task.run(load_recipe(_recipe(tmp_path / "b", dpd={"weighting": "none"})))
    task.run(load_recipe(_recipe(tmp_path / "c")))
    zero, plain, distilled = (stable_baselines3.PPO.load(tmp_path / d / "run" / "learner-0.zip").policy.state_dict()
                              for d in "abc")
    assert all(torch.equal(zero[k], plain[k]) for k in plain)
    assert not all(torch.equal(distilled[k], plain[k]) for k in plain)  # and a real weight does change it


def test_td3_learners_and_a_discrete_ppo_run(tmp_path):
    td3 = {"learning_starts": 50, "buffer_size": 1000, "batch_size": 32, "train_freq": 8, "gradient_steps": 1}
    report = get_task("policy_distillation").run(load_recipe(_recipe(
        tmp_path / "td3", learners=[{"algo": "td3", "hyperparameters": td3, "action_noise": 0.1},
                                    {"algo": "ddpg", "hyperparameters": td3}],
        dpd={"weighting": "hard"}, training={"timesteps": 200, "round_steps": 100})))
    assert report["student"]["name"].startswith("td3 (DPD, hard weighting)")
    noisy = stable_baselines3.TD3.load(tmp_path / "td3" / "run" / "learner-0.zip")  # the noise is saved with it
    assert noisy.action_noise._sigma.tolist() == [0.1]  # Pendulum: one action dimension
    assert stable_baselines3.DDPG.load(tmp_path / "td3" / "run" / "learner-1.zip").action_noise is None
    report = get_task("policy_distillation").run(load_recipe(_recipe(
        tmp_path / "cartpole", env={"id": "CartPole-v1"}, learners=[{"algo": "ppo", "hyperparameters": PPO_FAST}],
        dpd={"weighting": "none"})))
    assert "variants" not in report and report["student"]["name"] == "ppo (single learner)"


def test_an_interrupted_run_resumes_its_curve(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import kdkit.tasks.policy_distillation.task as policy_task
    from kdkit.tasks.policy_distillation.learners import Learner

    recipe = _recipe(tmp_path, training={"timesteps": 384, "round_steps": 128})
    learn, calls, now = Learner.learn, [], [0.0]

    def interrupted(self, steps):
        calls.append(steps)
        now[0] += 10.0  # the run's clock: 10 s a learner's round, nothing else
        if len(calls) == 5:  # learner 0 in round 3, after the checkpoint of round 2
            raise KeyboardInterrupt
        return learn(self, steps)

    monkeypatch.setattr(Learner, "learn", interrupted)
    monkeypatch.setattr(policy_task, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    with pytest.raises(RunInterrupted):
        get_task("policy_distillation").run(load_recipe(recipe))
    now[0] = 1000.0  # a new process's clock
    report = get_task("policy_distillation").run(load_recipe(recipe), resume=True)
    log = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [entry["round"] for entry in log] == [1, 2, 3]
    assert [entry["timesteps"][0] for entry in log] == [128, 256, 384]
    # rounds 1-2 (40 s, in the checkpoint) and the resumed round 3 (20 s); the 10 s the interrupt lost do not count
    assert report["train_seconds"] == 60.0


@pytest.mark.parametrize("changes, message", [
    ({"learners": [{"algo": "ppo"}]}, "dual policy distillation needs two learners"),
    ({"training": {"round_steps": 100}}, "not a multiple of learners\\[0\\]'s PPO n_steps 64"),
    ({"training": {"timesteps": 64, "round_steps": 128}}, "128 is more than training.timesteps 64"),
    ({"env": {"id": "NoSuchEnv-v0"}}, "recipe keys 'env' / 'learners'"),
    ({"learners": [{"algo": "ppo", "action_noise": 0.1}] * 2}, "'learners.action_noise': only for td3 / ddpg"),
    ({"learners": [{"algo": "td3", "hyperparameters": {"action_noise": 0.1}}] * 2}, "learners.action_noise instead"),
    ({"learners": [{"algo": "ppo", "hyperparameters": {**PPO_FAST, "no_such_option": 1}},
                   {"algo": "ppo", "hyperparameters": PPO_FAST}]}, "recipe keys 'env' / 'learners'"),
])
def test_bad_settings_are_one_line_errors_before_anything_is_written(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message) as err:
        get_task("policy_distillation").run(load_recipe(_recipe(tmp_path, **changes)))
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_a_comparison_draws_each_runs_learning_curve(tmp_path):
    from PIL import Image

    from kdkit import api

    single = _recipe(tmp_path, learners=[{"algo": "ppo", "hyperparameters": PPO_FAST}], dpd={"weighting": "none"})
    comparison = {"name": "dpd-vs-ppo", "output_dir": str(tmp_path / "cmp"), "seeds": [0, 1], "baseline": "ppo",
                  "runs": [{"name": "dpd", "recipe": _recipe(tmp_path)}, {"name": "ppo", "recipe": single}]}
    board = api.compare(comparison)
    [figure] = board["figures"]
    assert figure["caption"].startswith("learning curves")
    with Image.open(figure["path"]) as image:
        assert image.format == "PNG"
    rows = {row["run"]: row for row in board["rows"]}
    assert rows["dpd"]["delta_std"] is not None  # two seeds each: Δ in returns with its standard error
