"""evaluation.before and evaluation.int8: the student before training and its int8 copy as rows of the report."""

import json

import pytest
import torch

from kdkit import api


def test_a_compressed_run_reports_its_student_before_training_and_in_int8(tiny_recipe, tmp_path, monkeypatch):
    from kdkit.tasks.classification.task import ClassificationTask

    seen = {}
    evaluate_student = ClassificationTask.evaluate_student

    def spy(self, prep, model, name):
        seen.setdefault(name, [p.detach().clone() for p in model.parameters()])
        return evaluate_student(self, prep, model, name)

    monkeypatch.setattr(ClassificationTask, "evaluate_student", spy)
    tiny_recipe["student"]["embedding"] = {"method": "tfidf", "fraction": 0.25, "blocks": 2}
    tiny_recipe["evaluation"].update(before=True, int8=True)
    report = api.distill(tiny_recipe)
    out = tmp_path / "run"

    variants = report["variants"]
    assert set(variants) == {"before training", "int8"}
    assert json.loads((out / "before.json").read_text()) == variants["before training"]
    # the "before" row saw the student as built: its weights are not the trained student's
    trained = [p.detach() for p in _student(out).parameters()]
    before = seen["student as built"]
    assert len(before) == len(trained) and any(not torch.allclose(a, b) for a, b in zip(before, trained))
    # the int8 copy: same parameter count, a fraction of the bytes, its own latency and accuracy
    int8, student = variants["int8"], report["student"]
    assert int8["params"] == student["params"]
    # smaller (on this 32-wide model the file's names and headers weigh as much as the weights; the ratio on a
    # model of real width is tested in tests/models/test_int8.py)
    assert 0 < int8["size_mb"] < student["size_mb"]
    assert set(int8["latency"]) == set(student["latency"]) == {"1", "4"}
    assert 0 <= int8["metrics"]["accuracy"] <= 1
    markdown = (out / "report.md").read_text()
    assert "| student, int8 |" in markdown and "| student, before training |" in markdown
    assert "size (MB)" in markdown


def _student(out):
    from transformers import AutoModelForSequenceClassification

    from kdkit.loading import load_model

    return load_model(str(out / "student"), AutoModelForSequenceClassification, "student.model")[0]


def test_a_leaderboard_gives_each_variant_a_row_of_its_own():
    from kdkit.report.leaderboard import leaderboard

    def entry(accuracy, latency, size=None):
        e = {"name": "m", "params": 1000, "n": 10, "metrics": {"accuracy": accuracy},
             "latency": {"1": {"median_s": latency, "p90_s": latency}}}
        return e if size is None else {**e, "size_mb": size}

    def report(student, int8):
        return {"task": "classification", "primary_metric": "accuracy", "teacher": entry(0.9, 0.02),
                "student": student, "variants": {"int8": int8}}

    results = {"kd": [{"seed": s, "status": "done", "dir": "x", "report": report(entry(0.8 + s / 100, 0.01, 4.0),
                                                                                entry(0.7 + s / 100, 0.005, 1.0))}
                      for s in (0, 1)]}
    board = leaderboard(results)
    rows = {row["run"]: row for row in board["rows"]}
    assert rows["kd · int8"]["score_mean"] == pytest.approx(0.705)
    assert rows["kd · int8"]["size_mb"] == 1.0 and rows["kd"]["size_mb"] == 4.0
    assert rows["kd · int8"]["speedup"]["1"] == pytest.approx(4.0)
    assert rows["kd · int8"]["variant"] == "int8" and rows["kd"].get("variant") is None


def test_a_task_without_variant_rows_refuses_them_before_writing(tiny_recipe, tmp_path):
    from kdkit.config import parse_recipe
    from kdkit.engine.pipeline import TrainerTask
    from kdkit.errors import ConfigError

    class NoVariants(TrainerTask):
        name = "none"

    tiny_recipe["evaluation"]["int8"] = True
    recipe = parse_recipe(tiny_recipe)
    with pytest.raises(ConfigError, match="evaluation.int8"):
        NoVariants().run(recipe)
    assert not (tmp_path / "run").exists()
