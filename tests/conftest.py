"""Shared fixtures (helpers live in tests/tiny.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tiny import make_tiny_csv, make_tiny_teacher

# the tests' models are tiny: a second intra-op thread buys nothing and, on a busy 2-core machine, threads that
# spin-wait for each other slow every process on it; KDKIT_TEST_THREADS overrides. Subprocesses the tests start
# (the kill-and-resume run) get the same count through OMP_NUM_THREADS, so their float sums match in-process ones.
TEST_THREADS = os.environ.get("KDKIT_TEST_THREADS", "1")
os.environ["OMP_NUM_THREADS"] = TEST_THREADS
torch.set_num_threads(int(TEST_THREADS))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return make_tiny_teacher(tmp_path_factory.mktemp("models") / "teacher")


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return make_tiny_csv(tmp_path_factory.mktemp("data") / "train.csv")


@pytest.fixture
def tiny_recipe(tiny_teacher, tiny_csv, tmp_path):
    """A recipe dict that distils the tiny teacher in a few steps; tests change what they need."""
    return {
        "name": "tiny",
        "data": {"train_file": str(tiny_csv), "max_length": 16},
        "teacher": {"model": str(tiny_teacher)},
        "student": {"init": "teacher_layers", "layers": [0, 2]},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
        "training": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "logging_steps": 2, "save_steps": 2},
        "evaluation": {"latency_batch_sizes": [1, 4], "latency_repeats": 2},
        "output_dir": str(tmp_path / "run"),
    }


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path_factory, monkeypatch):
    """Tests never write to the user's kdkit cache; slow tests on the real assets may reuse it."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("KDKIT_CACHE", str(tmp_path_factory.getbasetemp() / "kdkit-cache"))
