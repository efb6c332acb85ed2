"""Multi-stage recipes (``stages``): config, the per-stage recipes, and end to end with reuse and exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from kdkit import api
from kdkit.config import parse_recipe
from kdkit.engine.stages import stage_recipes
from kdkit.errors import ConfigError

INTERMEDIATE = [{"name": "hidden_mse", "layer_map": "uniform"}]
PREDICTION = [{"name": "kd", "temperature": 1.0}]


@pytest.fixture
def staged(tiny_recipe):
    """The tiny recipe as TinyBERT's two stages: hidden states first, then the logits at a lower learning rate."""
    tiny_recipe.pop("losses")
    tiny_recipe["training"].update(report_to=[])
    tiny_recipe["evaluation"] = {"latency_batch_sizes": [1], "latency_repeats": 1}
    tiny_recipe["stages"] = [{"name": "intermediate", "losses": INTERMEDIATE},
                             {"name": "prediction", "losses": PREDICTION, "training": {"learning_rate": 1e-4}}]
    return tiny_recipe


# --- configuration --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, expected", [
    ({"stages": [{"losses": [{"name": "kd", "tempreature": 1}]}]},
     "recipe key 'stages[0].losses[0].tempreature' is unknown; valid keys: weight, name, temperature"),
    ({"stages": [{"losses": [{"name": "kdd"}]}]}, "recipe key 'stages[0].losses[0].name': unknown loss 'kdd'; valid:"),
    ({"stages": [{"losses": PREDICTION, "training": {"epochs": -1}}]},
     "recipe key 'stages[0].training.epochs': Input should be greater than 0"),
    ({"stages": [{"losses": PREDICTION, "training": {"epoch": 1}}]},
     "recipe key 'stages[0].training.epoch' is unknown; valid keys: epochs, max_steps"),
    ({"stages": [{"losses": PREDICTION, "trainig": {}}]},
     "recipe key 'stages[0].trainig' is unknown; valid keys: name,"),
    ({"stages": [{"losses": PREDICTION}, {"name": "no losses"}]},
     "recipe key 'losses' is required when a stage lists no losses of its own"),
    ({"stages": [{"losses": PREDICTION}] * 17}, "recipe key 'stages': List should have at most 16 items"),
    ({"stages": [{"losses": PREDICTION}], "generations": {}}, "recipe keys 'stages' and 'generations' do not go"),
    ({"stages": [{"losses": PREDICTION}], "student": {"layers": [0], "embedding": {"fraction": 0.5}}},
     "recipe key 'student.embedding' does not go with 'stages' yet"),
])
def test_bad_stages_are_one_line(staged, change, expected):
    staged.pop("stages")
    with pytest.raises(ConfigError, match="^" + expected.replace("[", r"\[").replace("(", r"\(")):
        parse_recipe({**staged, **change})


def test_a_task_without_stages_refuses_them(tiny_recipe):
    retrieval = {"task": "retrieval", "data": {"train_file": "pairs.jsonl"}, "teacher": tiny_recipe["teacher"],
                 "student": tiny_recipe["student"], "stages": [{"losses": [{"name": "tct"}]}]}
    with pytest.raises(ConfigError, match=r"^recipe key 'stages': the retrieval task does not train in stages"):
        parse_recipe(retrieval)
    recipe = parse_recipe({**tiny_recipe, "stages": [{"losses": PREDICTION}]})  # classification opts in
    assert recipe.supports_stages is True and len(recipe.stages) == 1


def test_stage_recipes_chain_the_students_and_merge_the_training_keys(staged, tmp_path):
    recipe = parse_recipe(staged)
    assert [loss.name for loss in recipe.losses] == ["hidden_mse"]  # the first stage's, standing in at the top
    first, second = stage_recipes(recipe)
    assert [p.resolved_output_dir() for p in (first, second)] == [tmp_path / "run" / f"stage-{i}" for i in (0, 1)]
    assert (first.name, second.name) == ("tiny-intermediate", "tiny-prediction")
    assert first.student == recipe.student and first.stages is None and second.stages is None
    assert (second.student.init, second.student.model) == ("pretrained", str(tmp_path / "run" / "stage-0" / "student"))
    assert [loss.name for loss in first.losses] == ["hidden_mse"] and [loss.name for loss in second.losses] == ["kd"]
    assert first.training == recipe.training
    assert second.training == recipe.training.model_copy(update={"learning_rate": 1e-4})
    assert first.teacher == second.teacher == recipe.teacher


def test_a_stage_whose_losses_do_not_fit_its_student_names_the_stage(staged):
    staged["stages"][1]["losses"] = [{"name": "hidden_mse", "layer_map": "pairs", "pairs": [[1, 7]]}]
    with pytest.raises(ConfigError, match=r"^stages\[1\] \('prediction'\): "):
        api.distill(staged)
    out = Path(staged["output_dir"])
    assert not out.exists() or not any(out.iterdir())  # nothing written before the check


# --- end to end -----------------------------------------------------------------------------------------------------

def _weights(folder):
    return load_file(folder / "model.safetensors")


def test_stages_end_to_end_reuse_and_resume_at_the_transition(staged, tmp_path):
    out = tmp_path / "run"
    report = api.distill(staged)

    rows = report["stages"]
    assert [(r["stage"], r["status"], r["losses"]) for r in rows] == [
        ("intermediate", "trained", ["hidden_mse"]), ("prediction", "trained", ["kd"])]
    assert [r["learning_rate"] for r in rows] == [5e-5, 1e-4]
    last = json.loads((out / "stage-1" / "report.json").read_text())
    assert report["student"] == last["student"] and report["student_dir"] == str(out / "stage-1" / "student")
    assert rows[1]["metrics"] == last["student"]["metrics"] and "teacher" in report
    assert "## Stages" in (out / "report.md").read_text()
    stage_seconds = [json.loads((out / f"stage-{i}" / "report.json").read_text())["train_seconds"] for i in (0, 1)]
    assert all(seconds > 0 for seconds in stage_seconds)
    assert report["train_seconds"] == pytest.approx(sum(stage_seconds), abs=0.0011)  # each stage's training time
    # the second stage started from the first one's student and moved it
    first, final = _weights(out / "stage-0" / "student"), _weights(out / "stage-1" / "student")
    assert first.keys() == final.keys() and any(not first[k].equal(final[k]) for k in first)

    # again: nothing trains
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert [r["status"] for r in api.distill(staged)["stages"]] == ["reused", "reused"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == stamps

    # stopped at the transition (stage 0 done, stage 1 not begun): stage 0 is reused, stage 1 gives the same student
    shutil.rmtree(out / "stage-1")
    (out / "report.json").unlink()
    assert [r["status"] for r in api.distill(staged)["stages"]] == ["reused", "trained"]
    again = _weights(out / "stage-1" / "student")
    assert all(final[k].equal(again[k]) for k in final)

    # stopped inside stage 1 (its report gone, its step-2 checkpoint kept): resumed, the same student again
    (out / "stage-1" / "report.json").unlink()
    shutil.rmtree(out / "stage-1" / "checkpoints" / "checkpoint-4")
    assert [r["status"] for r in api.distill(staged)["stages"]] == ["reused", "resumed"]
    resumed = _weights(out / "stage-1" / "student")
    assert all(final[k].equal(resumed[k]) for k in final)

    # a stage trained again makes every later one train again: what it starts from changed
    shutil.rmtree(out / "stage-0")
    assert [r["status"] for r in api.distill(staged)["stages"]] == ["trained", "trained"]


def test_compare_ranks_a_staged_run_by_its_last_student(staged, tmp_path):
    board = api.compare({"name": "st", "output_dir": str(tmp_path / "cmp"), "seeds": [0], "baseline": "kd",
                         "runs": [{"name": "staged", "recipe": staged},
                                  {"name": "kd", "recipe": {**staged, "stages": None, "losses": PREDICTION}}]})
    rows = {row["run"]: row for row in board["rows"]}
    final = json.loads((tmp_path / "cmp" / "staged" / "seed-0" / "stage-1" / "report.json").read_text())
    assert rows["staged"]["scores"] == pytest.approx([final["student"]["metrics"]["accuracy"]])
    # the last stage's per-example scores are the run's, so the row gets a paired interval against the baseline
    assert rows["staged"]["delta_ci"] is not None and rows["kd"]["delta_ci"] is None
