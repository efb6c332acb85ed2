"""State integrity and exit codes through the CLI, on the tiny models: a resume continues only the run its folder
holds (same recipe, or with ``--force`` only safe changes; same training data), resuming from the final checkpoint
takes no step, Ctrl-C exits 130 saying where it stopped, a fault exits 1 with its traceback in ``error.log``, and a
run that trained nothing or evaluated to NaN never exits 0."""

from __future__ import annotations

import json
import shutil
import tempfile

import pytest
from datasets import Dataset
from safetensors.torch import load_file

from kdkit.engine import DistillationTrainer
from kdkit.engine.pipeline import DATA_RECORD, check_resume_data, data_digest
from kdkit.errors import DataError
from tiny import classification, run_cli, write_recipe


def _files(folder) -> dict:
    """Every file under ``folder`` with its size and modification time: what a refusal must leave untouched."""
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _one_line(err: str) -> str:
    """The one line an error prints (progress bars of model loading may come before it)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert sum("error" in line for line in lines) == 1, err
    return lines[-1]


@pytest.fixture
def finished(tiny_recipe, tmp_path, capsys):
    """A finished run (4 steps, checkpoints at 2 and 4) of a recipe file on a csv of its own; the recipe's path."""
    csv = shutil.copy(tiny_recipe["data"]["train_file"], tmp_path / "train.csv")
    tiny_recipe["data"]["train_file"] = str(csv)
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe)
    code, _, err = run_cli(["distill", str(path)], capsys)
    assert code == 0, err
    return path


# --- resume: the recipe ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("training.learning_rate=0.001", "training.learning_rate"),  # the restored optimiser would keep the old one
    ("training.batch_size=4", "training.batch_size"),
    ("student.layers=[0, 1, 2]", "student.layers"),  # once a traceback after recipe.yaml was rewritten
    ("losses.1.temperature=4.0", "losses.1.temperature"),
    ("data.max_length=12", "data.max_length"),
])
@pytest.mark.parametrize("force", [False, True])
def test_resume_refuses_a_changed_recipe_before_writing_anything(finished, tmp_path, capsys, override, key, force):
    run = tmp_path / "run"
    before = _files(run)
    code, _, err = run_cli(["distill", str(finished), "--resume", "--set", override] + ["--force"] * force, capsys)
    assert code == 2
    line = _one_line(err)
    assert line.startswith(f"error: --resume: recipe key '{key}' differs from the run in '{run}'")
    assert "cannot change on resume" in line
    assert _files(run) == before


def test_resume_accepts_safe_changes_only_with_force(finished, tmp_path, capsys):
    run = tmp_path / "run"
    before = _files(run)
    change = ["--set", "evaluation.latency_repeats=1", "--set", "training.logging_steps=1"]
    code, _, err = run_cli(["distill", str(finished), "--resume", *change], capsys)
    assert code == 2
    assert "(evaluation.latency_repeats: 2 → 1 and 1 more); pass --force" in _one_line(err)
    assert _files(run) == before

    code, _, err = run_cli(["distill", str(finished), "--resume", "--force", *change], capsys)
    assert code == 0, err
    stored = (run / "recipe.yaml").read_text()
    assert "latency_repeats: 1" in stored and "logging_steps: 1" in stored


def test_resume_refuses_a_max_steps_below_the_step_reached(finished, tmp_path, capsys):
    code, _, err = run_cli(["distill", str(finished), "--resume", "--force", "--set", "training.max_steps=3"], capsys)
    assert code == 2
    assert "training.max_steps 3 is below the step the run has reached (checkpoint-4)" in _one_line(err)


def test_force_goes_with_resume_only(tiny_recipe, tmp_path, capsys):
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe)), "--force"], capsys)
    assert code == 2 and "--force goes with --resume" in _one_line(err)
    assert not (tmp_path / "run").exists()


# --- resume: the data --------------------------------------------------------------------------------------------

def _flip_labels(csv) -> None:
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join(rows[:1] + [r.replace(",pos", ",tmp").replace(",neg", ",pos").replace(",tmp", ",neg")
                                         for r in rows[1:]]) + "\n")


def _add_rows(csv) -> None:
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join(rows + rows[1:11]) + "\n")


# flipped labels move other rows into the (stratified) training split: the texts and their ids change with them
@pytest.mark.parametrize("change, what", [
    (_flip_labels, "columns 'attention_mask', 'input_ids', 'text' of 64 examples"),
    (_add_rows, "64 → 74 examples"),
])
def test_resume_refuses_changed_training_data(finished, tmp_path, capsys, change, what):
    run = tmp_path / "run"
    (run / "report.json").unlink()  # as if killed while evaluating
    change(tmp_path / "train.csv")
    before = _files(run)
    code, _, err = run_cli(["distill", str(finished), "--resume", "--force"], capsys)
    assert code == 2
    assert f"the training data changed since the run in '{run}' started ({what})" in _one_line(err)
    assert _files(run) == before


def test_resume_without_a_data_record_needs_force(finished, tmp_path, capsys):
    run = tmp_path / "run"
    (run / DATA_RECORD).unlink()  # a run folder written before kdkit kept the record
    code, _, err = run_cli(["distill", str(finished), "--resume"], capsys)
    assert code == 2 and f"holds no readable {DATA_RECORD}" in _one_line(err)
    code, _, err = run_cli(["distill", str(finished), "--resume", "--force"], capsys)
    assert code == 0, err
    assert (run / DATA_RECORD).is_file()


# --- resume: the final checkpoint --------------------------------------------------------------------------------

def test_resume_from_the_final_checkpoint_takes_no_step(tiny_recipe, tmp_path, capsys):
    # a constant learning rate: after the last step of the default linear schedule it is 0, and an extra step would
    # move no weight
    tiny_recipe["training"]["lr_scheduler_type"] = "constant"
    path = str(write_recipe(tmp_path / "r.yaml", tiny_recipe))
    code, _, err = run_cli(["distill", path], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    uninterrupted = load_file(run / "student" / "model.safetensors")
    (run / "report.json").unlink()  # as if killed while evaluating, after the last checkpoint
    code, out, err = run_cli(["distill", path, "--resume"], capsys)
    assert code == 0, err
    assert f"resuming from {run / 'checkpoints' / 'checkpoint-4'}" in out
    resumed = load_file(run / "student" / "model.safetensors")
    assert [k for k in uninterrupted if not uninterrupted[k].equal(resumed[k])] == []
    assert max(entry["step"] for entry in json.loads((run / "metrics.json").read_text())) == 4
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert (run / "report.json").is_file()


# --- exit codes --------------------------------------------------------------------------------------------------

def _interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C during the optimiser step after ``step`` steps were taken."""
    original = DistillationTrainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillationTrainer, "training_step", training_step)


def test_ctrl_c_exits_130_naming_the_step_and_the_run_resumes(tiny_recipe, tmp_path, monkeypatch, capsys):
    path = str(write_recipe(tmp_path / "r.yaml", tiny_recipe))
    _interrupt_at(monkeypatch, 2)  # checkpoint-2 is written
    code, _, err = run_cli(["distill", path], capsys)
    assert code == 130
    assert err.rstrip().endswith("interrupted at step 2; resume with --resume")  # after the progress bar's line
    monkeypatch.undo()
    code, _, err = run_cli(["distill", path, "--resume"], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "report.json").is_file()


def test_ctrl_c_before_the_first_checkpoint_or_outside_a_run(tiny_recipe, tmp_path, monkeypatch, capsys):
    path = str(write_recipe(tmp_path / "r.yaml", tiny_recipe))
    _interrupt_at(monkeypatch, 1)
    code, _, err = run_cli(["distill", path], capsys)
    assert code == 130
    assert err.rstrip().endswith("interrupted at step 1; no checkpoint was written yet, so start it again with "
                                 "--overwrite")

    def interrupted(self, recipe):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(classification()), "load_data", interrupted)
    code, _, err = run_cli(["distill", path, "--overwrite"], capsys)
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted"


def test_ctrl_c_in_compare_says_to_run_it_again(tiny_recipe, tmp_path, monkeypatch, capsys):
    path = str(write_recipe(tmp_path / "r.yaml", tiny_recipe))
    _interrupt_at(monkeypatch, 2)
    code, _, err = run_cli(["compare", path, "--output-dir", str(tmp_path / "cmp")], capsys)
    assert code == 130
    assert err.rstrip().endswith("interrupted at step 2; run the same `kdkit compare` again to resume")


def _fails_while_evaluating(monkeypatch, error: Exception) -> None:
    def evaluate(self, prep):
        raise error

    monkeypatch.setattr(type(classification()), "evaluate", evaluate)


def test_internal_error_is_one_line_exit_1_with_the_traceback_in_error_log(tiny_recipe, tmp_path, monkeypatch,
                                                                           capsys):
    _fails_while_evaluating(monkeypatch, RuntimeError("boom\nsecond line of the message"))
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe))], capsys)
    assert code == 1
    log = tmp_path / "run" / "error.log"
    assert _one_line(err) == f"internal error: RuntimeError: boom; details in {log}"
    text = log.read_text()
    assert "Traceback" in text and "second line of the message" in text and "in evaluate" in text
    assert not (tmp_path / "run" / "report.json").exists()


def test_internal_error_before_a_run_folder_exists_logs_to_a_temporary_file(tiny_recipe, tmp_path, monkeypatch,
                                                                            capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def load_data(self, recipe):
        raise ValueError("broken loader")

    monkeypatch.setattr(type(classification()), "load_data", load_data)
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe))], capsys)
    assert code == 1
    line = _one_line(err)
    assert line.startswith("internal error: ValueError: broken loader; details in ")
    log = tmp_path / line.rsplit("/", 1)[-1]
    assert log.name.startswith("kdkit-error-") and "broken loader" in log.read_text()
    assert not (tmp_path / "run").exists()


def test_a_nan_metric_never_exits_0_nor_writes_a_report(tiny_recipe, tmp_path, monkeypatch, capsys):
    original = type(classification()).evaluate

    def evaluate(self, prep):
        results = original(self, prep)
        results["student"]["metrics"]["accuracy"] = float("nan")
        return results

    monkeypatch.setattr(type(classification()), "evaluate", evaluate)
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe))], capsys)
    assert code == 1
    assert _one_line(err).startswith("internal error: RunFault: the student's accuracy on the test split is nan")
    assert not (tmp_path / "run" / "report.json").exists()


def test_a_run_that_takes_no_step_never_exits_0(tiny_recipe, tmp_path, monkeypatch, capsys):
    def no_steps(self, *args, **kwargs):
        self.control.should_training_stop = True

    monkeypatch.setattr(DistillationTrainer, "_run_epoch", no_steps)
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe))], capsys)
    assert code == 1 and "training took no optimiser step" in _one_line(err)
    assert not (tmp_path / "run" / "report.json").exists()


def test_nothing_to_train_on_is_a_user_error_before_anything_is_written(tiny_recipe, tmp_path, monkeypatch,
                                                                        capsys):
    task = type(classification())
    original = task.tokenize

    def tokenize(self, prep):
        splits = original(self, prep)
        splits["train"] = splits["train"].select([])
        return splits

    monkeypatch.setattr(task, "tokenize", tokenize)
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe))], capsys)
    assert code == 2 and "the training split has no examples left to train on" in _one_line(err)
    assert not (tmp_path / "run").exists()


def test_the_data_record_names_the_changed_column(tmp_path):
    train = Dataset.from_dict({"input_ids": [[5, 6], [7]], "labels": [0, 1]})
    (tmp_path / DATA_RECORD).write_text(json.dumps(data_digest(train)))
    check_resume_data(tmp_path, data_digest(Dataset.from_dict(train.to_dict())), force=False)  # same data: fine
    flipped = Dataset.from_dict({"input_ids": [[5, 6], [7]], "labels": [1, 1]})
    with pytest.raises(DataError, match=r"changed since the run .* started \(column 'labels' of 2 examples\)"):
        check_resume_data(tmp_path, data_digest(flipped), force=True)


# --- teacher cache: the hint a refusal gives is a command that works ---------------------------------------------

def test_the_rebuild_hint_of_a_damaged_cache_is_a_command_that_works(tiny_recipe, tmp_path, capsys):
    """A same-size corrupted file in an explicit teacher cache is refused with a hint; running the hint's command
    (once the hint said `kdkit cache RECIPE`, which refused again without --rebuild) rebuilds it, then distill runs."""
    tiny_recipe["teacher"]["cache"] = str(tmp_path / "signals")
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe)
    assert run_cli(["cache", str(path)], capsys)[0] == 0
    data = max((p for p in (tmp_path / "signals").iterdir() if p.name != "manifest.json"),
               key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    code, _, err = run_cli(["distill", str(path)], capsys)
    line = _one_line(err)
    assert code == 2 and "`kdkit cache RECIPE --rebuild`" in line, line
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(["cache", str(path), "--rebuild"], capsys)
    assert code == 0, err
    assert run_cli(["distill", str(path)], capsys)[0] == 0
