"""End to end through the CLI. Exact resume after ``kill -9`` and determinism, on the tiny models (CPU).

Dropout stays on (BERT's 0.1): an exact match after resume then shows that the saved RNG states are restored at
the right point, which turning dropout off would hide. Comparisons are exact (``torch.equal``, ``==`` on floats):
the same operations in the same order on the same CPU give the same bits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from kdkit import api
from kdkit.cli import main
from kdkit.engine.checkpoints import STAGING_DIR, last_complete_checkpoint
from tiny import write_recipe

STEPS, SAVE_EVERY = 15, 5  # 8 batches an epoch: checkpoint-10 is 2 batches into the second epoch
STEP_DELAY = 0.3  # seconds the killed run sleeps before each step, so that the kill lands mid-run

# imported at start-up by the killed run's interpreter (PYTHONPATH): slows each step and can stall one save
# between writing the optimiser and the RNG states; changes no number
SLOW_STEPS = """
import os, time
from kdkit.engine import trainer

_step, _save_rng_state = trainer.DistillationTrainer.training_step, trainer.DistillationTrainer._save_rng_state


def _slow_step(self, *args, **kwargs):
    time.sleep(float(os.environ["KDKIT_TEST_STEP_DELAY"]))
    return _step(self, *args, **kwargs)


def _stalled_save(self, output_dir):
    if self.state.global_step == int(os.environ.get("KDKIT_TEST_STALL_SAVE", -1)):
        time.sleep(600)
    return _save_rng_state(self, output_dir)


trainer.DistillationTrainer.training_step = _slow_step
trainer.DistillationTrainer._save_rng_state = _stalled_save
"""


def _recipe(tiny_recipe: dict, out) -> dict:
    tiny_recipe["training"].update(max_steps=STEPS, save_steps=SAVE_EVERY, logging_steps=1, save_total_limit=5)
    tiny_recipe["output_dir"] = str(out)
    return tiny_recipe


def _outcome(run) -> dict:
    """What must not depend on interruptions: weights, every logged training value, the report's scores."""
    state = json.loads((run / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    report = json.loads((run / "report.json").read_text())
    return {"weights": load_file(run / "student" / "model.safetensors"),
            # throughput is wall-clock time, the one logged value that is not reproducible
            "log": [{k: v for k, v in entry.items() if not k.endswith("_per_second")}
                    for entry in state["log_history"] if "loss" in entry],
            "scores": {who: {k: report[who][k] for k in ("metrics", "n", "params")} for who in ("teacher", "student")}}


def _assert_same(a: dict, b: dict) -> None:
    assert a["weights"].keys() == b["weights"].keys()
    differing = [k for k in a["weights"] if not a["weights"][k].equal(b["weights"][k])]
    assert not differing, f"weights differ: {differing}"
    assert len(a["log"]) == STEPS and a["log"] == b["log"]
    assert a["scores"] == b["scores"]


@pytest.fixture(autouse=True)
def _tiny_cache(tmp_path_factory, monkeypatch):
    """The tiny teacher's signal cache stays out of the user's cache, in slow variants too."""
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path_factory.getbasetemp() / "kdkit-cache"))


@pytest.fixture(scope="module")
def _reference() -> dict:
    return {}


@pytest.fixture
def uninterrupted(_reference, tiny_recipe, tmp_path_factory) -> dict:
    """One uninterrupted run serves the whole module: its output folder changes no number."""
    if not _reference:
        out = tmp_path_factory.mktemp("uninterrupted")
        api.distill(_recipe(tiny_recipe, out))
        _reference.update(_outcome(out))
    return _reference


def test_same_seed_and_recipe_give_identical_losses_and_weights(uninterrupted, tiny_recipe, tmp_path):
    api.distill(_recipe(tiny_recipe, tmp_path / "again"))
    _assert_same(_outcome(tmp_path / "again"), uninterrupted)


@pytest.mark.parametrize("moment", ["mid_step", pytest.param("mid_save", marks=pytest.mark.slow)])
def test_kill_9_then_resume_matches_the_uninterrupted_run(moment, uninterrupted, tiny_recipe, tmp_path, capsys):
    """Killed one or two steps after checkpoint-10 was written, or while checkpoint-10 was being written."""
    run = tmp_path / "killed"
    checkpoints = run / "checkpoints"
    recipe = write_recipe(tmp_path / "killed.yaml", _recipe(tiny_recipe, run))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_STEPS)
    env = {**os.environ, "KDKIT_TEST_STEP_DELAY": str(STEP_DELAY),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    if moment == "mid_save":
        env["KDKIT_TEST_STALL_SAVE"] = "10"
        ready, resume_from = lambda: (checkpoints / STAGING_DIR / "checkpoint-10" / "optimizer.pt").is_file(), 5
    else:
        ready, resume_from = lambda: last_complete_checkpoint(checkpoints) == checkpoints / "checkpoint-10", 10
    log = tmp_path / "killed.log"
    with log.open("w") as output:
        proc = subprocess.Popen([sys.executable, "-m", "kdkit.cli", "distill", str(recipe)], env=env,
                                stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        if moment == "mid_step":
            time.sleep(1.5 * STEP_DELAY)
        assert proc.poll() is None, "the run ended before the kill"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert last_complete_checkpoint(checkpoints) == checkpoints / f"checkpoint-{resume_from}"
    assert not (run / "report.json").exists()

    with pytest.raises(SystemExit) as exit_:
        main(["distill", str(recipe), "--resume"])
        raise SystemExit(0)
    assert exit_.value.code == 0, capsys.readouterr().err
    assert f"resuming from {checkpoints / f'checkpoint-{resume_from}'}" in capsys.readouterr().out
    _assert_same(_outcome(run), uninterrupted)
