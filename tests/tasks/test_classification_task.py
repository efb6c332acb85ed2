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


def test_teacher_fine_tuning_keeps_the_best_validation_epoch_and_stops_after_patience(monkeypatch):
    """select: best scores each epoch, keeps the best epoch's weights (not the last) and stops once `patience`
    epochs have not beaten it; the curve is stored and reported."""
    model = torch.nn.Linear(2, 2)
    accuracies = iter([0.6, 0.8, 0.7, 0.75, 0.9])
    keep = task_module._BestEpoch(model, lambda: {"accuracy": next(accuracies), "ece": 0.1}, patience=2)
    control = type("Control", (), {"should_training_stop": False})()
    weights = []
    for epoch in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(epoch)
        weights.append(epoch)
        keep.on_epoch_end(None, type("State", (), {"epoch": float(epoch)})(), control)
        if control.should_training_stop:
            break
    assert epoch == 4  # epochs 3 and 4 did not beat epoch 2
    meta = keep.restore()
    assert model.weight.eq(2).all()  # epoch 2's weights, not the last
    assert meta["kept_epoch"] == 2 and meta["validation"]["accuracy"] == 0.8
    assert [p["accuracy"] for p in meta["curve"]] == [0.6, 0.8, 0.7, 0.75]


def test_fine_tuned_teacher_stores_its_validation_curve_and_the_report_shows_it(tiny_recipe):
    tiny_recipe["teacher"]["finetune"] = {"epochs": 2, "report_to": [], "batch_size": 16}
    recipe = load_recipe(tiny_recipe)
    path = TASK.finetune_teacher(recipe, load_data(recipe.data))
    line = task_module._teacher_curve(path)
    assert line.startswith("validation accuracy after each fine-tuning epoch: epoch 1 ") and "(kept)" in line
    tiny_recipe["teacher"]["select"] = "last"
    last = load_recipe(tiny_recipe)
    other = TASK.finetune_teacher(last, load_data(last.data))
    assert other != path and task_module._teacher_curve(other) is None


def test_a_student_that_gives_one_class_is_marked_and_warned_about(tiny_recipe, capsys):
    recipe = load_recipe(tiny_recipe)
    prep = TASK.prepare(recipe)
    args = (prep.data, recipe.data.max_length, recipe.evaluation)
    with torch.no_grad():  # class 1 for every input: a bias far above anything the weights add
        prep.student.classifier.bias.copy_(torch.tensor([-100.0, 100.0]))
    report = evaluate_pair(None, None, prep.student, prep.tokenizer, *args, names=("", "the student"))
    assert report["student"]["one_class"] is True
    assert "[kdkit] warning: the student gives one class to all" in capsys.readouterr().err  # stdout stays data

    class AroundTheMean(torch.nn.Module):  # class 1 above the batch's mean of one pooled feature: both classes occur
        def forward(self, pooled):
            centred = pooled[:, :1] - pooled[:, :1].mean()
            return torch.cat([-centred, centred], dim=1)

    prep.student.classifier = AroundTheMean()
    report = evaluate_pair(None, None, prep.student, prep.tokenizer, *args)
    assert "one_class" not in report["student"]
