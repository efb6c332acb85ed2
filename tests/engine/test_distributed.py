"""One optimiser step is the same however it is split: one batch of 8, 4 accumulated batches of 2, or 2 CPU
processes (torchrun, gloo) × 2 accumulated batches of 2 — with a token-level loss, whose micro-batches hold different
numbers of tokens, so a per-micro-batch mean would weigh the tokens of short batches more (token-level
normalisation by the step's units, DistillationTrainer.get_batch_samples)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tiny import write_recipe

# DDP averages the two ranks' gradients, each a mean over 4 examples: the same update as one mean over 8, up to
# float summation order. Dropout is off so the two layouts draw no different random masks, and the training set is
# exactly one global batch, so every step sees the same 8 examples whichever way the sampler shards a shuffle.
WEIGHT_TOLERANCE = 1e-6  # measured: under 1e-8 after 4 SGD steps at lr 0.5 (float summation order)


def _run(command, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_one_batch_accumulation_and_two_processes_give_the_same_steps(tiny_recipe, tmp_path):
    tiny_recipe["student"] = {"init": "config", "overrides": {"num_hidden_layers": 2, "hidden_dropout_prob": 0.0,
                                                              "attention_probs_dropout_prob": 0.0}}
    tiny_recipe["data"]["max_train_samples"] = 8
    tiny_recipe["losses"].append({"name": "hidden_mse", "weight": 4.0})  # a mean over tokens, not examples
    # SGD, not Adam: Adam divides by the gradient's running scale, which turns float-rounding noise in near-zero
    # gradients into full-size updates and would hide whether the two layouts compute the same gradients
    tiny_recipe["training"].update(max_steps=4, learning_rate=0.5, save_steps=100, logging_steps=1,
                                   extra={"optim": "sgd"})
    layouts = {"one": (1, 8, 1), "accumulated": (1, 2, 4), "two": (2, 2, 2)}
    for name, (processes, per_device, accumulation) in layouts.items():
        recipe = dict(tiny_recipe, output_dir=str(tmp_path / name),
                      training=dict(tiny_recipe["training"], batch_size=per_device,
                                    gradient_accumulation_steps=accumulation))
        path = write_recipe(tmp_path / f"{name}.yaml", recipe)
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                    if processes > 1 else [sys.executable])
        _run(launcher + ["-m", "kdkit.cli", "distill", str(path)], tmp_path)

    env_two = json.loads((tmp_path / "two" / "environment.json").read_text())
    assert env_two["world_size"] == 2, "torchrun really started two processes"
    one = load_file(tmp_path / "one" / "student" / "model.safetensors")
    for other in ("accumulated", "two"):
        weights = load_file(tmp_path / other / "student" / "model.safetensors")
        assert one.keys() == weights.keys()
        worst = max((one[k] - weights[k]).abs().max().item() for k in one)
        assert worst <= WEIGHT_TOLERANCE, f"{other}: weights differ by {worst}"
    reports = [json.loads((tmp_path / n / "report.json").read_text()) for n in layouts]
    assert len({r["student"]["metrics"]["accuracy"] for r in reports}) == 1
    losses = [[h["loss"] for h in json.loads((tmp_path / n / "metrics.json").read_text()) if "loss" in h]
              for n in layouts]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4) and losses[0] == pytest.approx(losses[2], rel=1e-4)
    assert losses[0][-1] < 0.95 * losses[0][0], "training moved the weights far more than the tolerance"
