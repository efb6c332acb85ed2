"""End to end through the CLI. Numerical faults: a NaN/inf loss term stops the run (exit code 2, last good checkpoint
kept) or is skipped."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from transformers import TrainerCallback

from kdkit.cli import main
from kdkit.config import parse_recipe
from kdkit.engine import training_arguments
from kdkit.engine.checkpoints import is_complete
from kdkit.terms.logits import KDTerm
from kdkit.errors import ConfigError, NumericalError
from test_trainer import _trainer
from tiny import with_key, write_recipe


@pytest.fixture
def bad_kd(monkeypatch):
    """``bad_kd(calls, value)``: the kd term is ``value`` (NaN by default) at those 1-based calls."""

    def inject(calls, value=float("nan")):
        original, count = KDTerm.forward, itertools.count(1)

        def forward(self, student, teacher, batch):
            loss = original(self, student, teacher, batch)
            return loss + value if next(count) in calls else loss

        monkeypatch.setattr(KDTerm, "forward", forward)

    return inject


def _cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(args)
        raise SystemExit(0)
    return exit_.value.code, capsys.readouterr().err


def test_nan_stops_with_term_and_step_keeps_the_last_good_checkpoint_and_resumes(
        tiny_recipe, tmp_path, bad_kd, monkeypatch, capsys):
    tiny_recipe["training"].update(max_steps=8, save_steps=2, logging_steps=2)
    recipe = str(write_recipe(tmp_path / "r.yaml", tiny_recipe))
    checkpoints = tmp_path / "run" / "checkpoints"
    bad_kd({5})

    code, err = _cli(["distill", recipe], capsys)

    assert code == 2 and "Traceback" not in err and err.count("error: ") == 1
    # the progress bar's unfinished line may come first
    assert err.rstrip().endswith(
        f"error: loss term 'kd' is nan at step 5; the last good checkpoint is checkpoint-4 in {checkpoints}; "
        f"training.nonfinite=skip would skip such batches")
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert is_complete(checkpoints / "checkpoint-4")

    monkeypatch.undo()
    code, err = _cli(["distill", recipe, "--resume"], capsys)
    assert code == 0, err
    assert is_complete(checkpoints / "checkpoint-8")


class _Snapshots(TrainerCallback):
    def __init__(self, model):
        self.model, self.taken = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.taken.append({k: v.clone() for k, v in self.model.state_dict().items()})


def test_skip_leaves_weights_untouched_for_a_bad_batch_and_logs_it(tiny_recipe, tmp_path, bad_kd):
    tiny_recipe["training"].update(max_steps=4, logging_steps=1, nonfinite="skip")
    bad_kd({3}, float("inf"))
    prep, trainer = _trainer(tiny_recipe, tmp_path / "out", save_strategy="no")  # AdamW with weight decay
    snapshots = _Snapshots(prep.module)
    trainer.add_callback(snapshots)

    trainer.train()

    changed = [any(not torch.equal(a[k], b[k]) for k in a) for a, b in itertools.pairwise(snapshots.taken)]
    assert changed == [True, False, True], "step 3 (the bad batch) changed no weight, not even by momentum or decay"
    log = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["skipped_batches"] for h in log] == [0, 0, 1, 0]
    assert "loss_kd" not in log[2] and all(torch.isfinite(torch.tensor(h["loss_kd"])) for h in log[:2] + log[3:])


def test_skip_still_stops_after_too_many_bad_batches_in_a_row(tiny_recipe, tmp_path, bad_kd):
    tiny_recipe["training"].update(max_steps=8, save_steps=2, nonfinite="skip", max_consecutive_nonfinite=3)
    bad_kd(set(range(3, 100)))
    _, trainer = _trainer(tiny_recipe, tmp_path / "out")
    with pytest.raises(NumericalError) as error:
        trainer.train()
    assert str(error.value) == (f"loss term 'kd' is nan at step 5 (3 non-finite batches in a row, "
                                f"training.max_consecutive_nonfinite); the last good checkpoint is checkpoint-4 in "
                                f"{tmp_path / 'out'}")


def test_nonfinite_keys_are_validated_and_reach_the_training_arguments(tiny_recipe, tmp_path):
    recipe = with_key(copy.deepcopy(tiny_recipe), "training.nonfinite", "skip")
    args = training_arguments(parse_recipe(recipe).training, tmp_path)
    assert (args.nonfinite, args.max_consecutive_nonfinite) == ("skip", 10)
    for key, value in (("training.nonfinite", "halt"), ("training.max_consecutive_nonfinite", 0)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_recipe(with_key(copy.deepcopy(tiny_recipe), key, value))
