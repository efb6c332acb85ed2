"""The quickstart on the real offline assets (MiniLM-L6, Rotten Tomatoes). Minutes, so marked slow:
run with `bash scripts/test.sh -m slow`."""

import json

import pytest

from kdkit import api


@pytest.mark.slow
def test_quickstart_student_keeps_97_percent_of_teacher_accuracy(tmp_path):
    report = api.quickstart(tmp_path / "qs")
    saved = json.loads((tmp_path / "qs" / "report.json").read_text())
    assert saved["student"]["metrics"] == report["student"]["metrics"]
    teacher, student = saved["teacher"], saved["student"]
    assert teacher["n"] == student["n"] > 1000, "the whole test split is evaluated"
    assert teacher["metrics"]["accuracy"] > 0.75, "the fine-tuned teacher learned the task"
    assert student["metrics"]["accuracy"] >= 0.97 * teacher["metrics"]["accuracy"]
    assert student["params"] < teacher["params"]
    assert set(saved["comparison"]["speedup"]) == {"1", "32"}
    assert (tmp_path / "qs" / "report.md").read_text().startswith("| model")
