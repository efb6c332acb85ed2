"""The classification task's own parts: the teacher's evaluation kept in the artifact store, the fine-tuned teacher
stored once per (model, data, settings), exported students that carry a model card."""

import json
from pathlib import Path

import torch
import yaml

from kdkit.config import load_recipe
from kdkit.store import ArtifactStore
from kdkit.tasks import get_task
from kdkit.tasks.classification import evaluate_pair, load_data
from kdkit.tasks.classification import task as task_module

TASK = get_task("classification")


def test_teacher_evaluation_is_measured_once_and_read_back(tiny_recipe, tiny_teacher):
    """Every run of a comparison shares its teacher: its accuracy comes from the cache after the first run (its
    latency is timed again, so speedups stay same-process ratios), and other weights are scored anew."""
    recipe = load_recipe(tiny_recipe)
    prep = TASK.prepare(recipe)
    args = (prep.data, recipe.data.max_length, recipe.evaluation)
    first = evaluate_pair(prep.teacher, prep.teacher_tokenizer, prep.student, prep.tokenizer, *args)
    second = evaluate_pair(prep.teacher, prep.teacher_tokenizer, prep.student, prep.tokenizer, *args)
    assert "cached" not in first["teacher"] and second["teacher"]["cached"] is True
    assert second["teacher"]["latency"].keys() == first["teacher"]["latency"].keys()
    assert second["teacher"]["latency"] != first["teacher"]["latency"]  # timed again, not read back
    assert second["teacher"]["metrics"] == first["teacher"]["metrics"]
    assert "cached" not in second["student"]  # the student is always measured
    with torch.no_grad():
        next(prep.teacher.parameters()).add_(1.0)
    third = evaluate_pair(prep.teacher, prep.teacher_tokenizer, prep.student, prep.tokenizer, *args)
    assert "cached" not in third["teacher"]


def test_teacher_is_fine_tuned_on_the_whole_training_split(tiny_recipe, monkeypatch):
    """data.max_train_samples limits the student's data; the teacher (and its cache key) see every example."""
    seen = {}
    real_tokenize = task_module.tokenize

    def spy(splits, tokenizer, max_length, *args, **kwargs):
        seen.setdefault("train", len(splits["train"]))
        return real_tokenize(splits, tokenizer, max_length, *args, **kwargs)

    tiny_recipe["teacher"]["finetune"] = {"max_steps": 1, "report_to": []}
    full = load_recipe(tiny_recipe)
    tiny_recipe["data"]["max_train_samples"] = 10
    limited = load_recipe(tiny_recipe)
    monkeypatch.setattr(task_module, "tokenize", spy)
    path = TASK.finetune_teacher(limited, load_data(limited.data))
    assert seen["train"] == len(load_data(full.data).splits["train"]) > 10
    assert TASK.finetune_teacher(full, load_data(full.data)) == path  # one teacher for both recipes


def test_edited_teacher_evaluation_is_not_trusted(tiny_recipe):
    """A hand-edited or truncated stored evaluation fails its checksum and is measured again."""
    recipe = load_recipe(tiny_recipe)
    prep = TASK.prepare(recipe)
    args = (prep.data, recipe.data.max_length, recipe.evaluation)
    first = evaluate_pair(prep.teacher, prep.teacher_tokenizer, prep.student, prep.tokenizer, *args)
    stored = [p for p in (ArtifactStore().root / "evaluations").glob("*/value.json")
              if json.loads(p.read_text())["accuracy"] == first["teacher"]["metrics"]["accuracy"]]
    assert stored
    for value in stored:
        value.write_text(value.read_text().replace(str(first["teacher"]["metrics"]["accuracy"]), "0.999"))
    again = evaluate_pair(prep.teacher, prep.teacher_tokenizer, prep.student, prep.tokenizer, *args)
    assert "cached" not in again["teacher"]
    assert again["teacher"]["metrics"]["accuracy"] == first["teacher"]["metrics"]["accuracy"] != 0.999


def test_exported_student_has_a_model_card(tiny_recipe):
    from kdkit import api

    report = api.distill(tiny_recipe)
    card = (Path(report["student_dir"]) / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert "base_model" not in header  # a local folder is no Hub model; the body names it
    assert "distilled from the teacher" in card
    assert header["pipeline_tag"] == "text-classification" and "knowledge-distillation" in header["tags"]
    assert "| teacher" in card and "kd" in card  # the report table and the losses
    stored = json.loads((Path(tiny_recipe["output_dir"]) / "report.json").read_text())
    assert stored["primary_metric"] == "accuracy" and "accuracy" in stored["student"]["metrics"]
