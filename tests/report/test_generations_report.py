"""The born-again table (kdkit.report.generations) on hand-made rows; the training side is tests/test_generations.py."""

import json

from kdkit.report.generations import render_markdown, write_report


def _rows(scores, primary="accuracy", **others):
    return [{"generation": g, "status": "trained", "dir": f"gen-{g}", "teacher_source": "teacher" if g == 0 else None,
             "params": 2_000_000, "metrics": {primary: s, **others}, "gain": s - scores[0], "latency": {}}
            for g, s in enumerate(scores)]


def test_generations_table_on_the_primary_metric_with_ece_when_present():
    results = {"generations": _rows([0.5, 0.55], ece=0.1), "primary_metric": "accuracy", "alpha": 0.4,
               "temperature": 4.0, "split": "test"}
    lines = render_markdown(results).splitlines()
    assert lines[0] == ("| generation | teacher | params (M) | accuracy (%) | ece (%) ↓ | gain over gen 0 (accuracy, "
                        "points) | status |")
    assert lines[2] == "| 0 | teacher | 2.00 | 50.00 | 10.00 | +0.00 | trained |"
    assert lines[3] == "| 1 | generation 0 | 2.00 | 55.00 | 10.00 | +5.00 | trained |"
    text = "\n".join(lines)
    assert "α = 0.4" in text and "T = 4" in text and "Primary metric: accuracy" in text and "Split: test" in text
    assert "expected calibration error" in text


def test_generations_without_ece_on_another_metric_have_no_ece_column():
    results = {"generations": _rows([0.30, 0.32, 0.31], primary="rouge_l"), "primary_metric": "rouge_l",
               "alpha": 0.4, "temperature": 4.0}
    table = render_markdown(results)
    assert table.splitlines()[0] == ("| generation | teacher | params (M) | rouge_l (%) | gain over gen 0 (rouge_l, "
                                     "points) | status |")
    assert "| 2 | generation 1 | 2.00 | 31.00 | +1.00 | trained |" in table
    assert "ece" not in table and "calibration" not in table


def test_old_rows_with_accuracy_and_ece_still_render(tmp_path):
    rows = [{"generation": g, "status": "reused", "dir": "", "teacher_source": None, "params": 2_000_000,
             "accuracy": a, "ece": e, "gain": a - 0.5} for g, (a, e) in enumerate([(0.5, 0.1), (0.55, None)])]
    results = {"generations": rows, "alpha": 0.4, "temperature": 4.0}  # no primary_metric: accuracy
    md_path, json_path = write_report(tmp_path, results)
    table = md_path.read_text()
    assert "| 0 | — | 2.00 | 50.00 | 10.00 | +0.00 | reused |" in table
    assert "| 1 | generation 0 | 2.00 | 55.00 | — | +5.00 | reused |" in table
    assert json.loads(json_path.read_text()) == results
