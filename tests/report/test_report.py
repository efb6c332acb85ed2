import json

import pytest

from kdkit.report.report import compare, render_markdown, write_report


@pytest.fixture
def results():
    teacher = {"name": "minilm-l6", "params": 22_713_216, "accuracy": 0.8, "n": 1000,
               "latency": {"1": {"median_s": 0.004, "p90_s": 0.005}, "32": {"median_s": 0.080, "p90_s": 0.09}}}
    student = {"name": "student", "params": 11_356_608, "accuracy": 0.76, "n": 1000,
               "latency": {"32": {"median_s": 0.020, "p90_s": 0.03}, "1": {"median_s": 0.002, "p90_s": 0.003}}}
    return {"split": "test", "dm_alpha": 0.5, "teacher": teacher, "student": student, "torch_threads": 2}


def test_compare_hand_computed(results):
    derived = compare(results)
    assert derived["speedup"] == {"1": pytest.approx(2.0), "32": pytest.approx(4.0)}
    assert derived["accuracy_ratio"] == pytest.approx(0.95)
    assert derived["param_ratio"] == pytest.approx(0.5)
    assert derived["distillation_metric"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.05)


def test_markdown_table(results):
    lines = render_markdown(results).splitlines()
    assert lines[0] == ("| model | params (M) | accuracy (%) | latency b1 (ms) | latency b32 (ms) | speedup b1 | "
                        "speedup b32 | accuracy ratio | DM (α=0.5) |")
    assert lines[2] == "| teacher: minilm-l6 | 22.71 | 80.00 | 4.00 | 80.00 | 1.00x | 1.00x | 100.0% | — |"
    assert lines[3] == "| student: student | 11.36 | 76.00 | 2.00 | 20.00 | 2.00x | 4.00x | 95.0% | 0.275 |"
    assert "- split: test" in lines and "- torch_threads: 2" in lines


def test_write_report_json_holds_every_number(results, tmp_path):
    md_path, json_path = write_report(tmp_path / "out", results)
    assert md_path.read_text() == render_markdown(results)
    saved = json.loads(json_path.read_text())
    assert saved["teacher"] == results["teacher"] and saved["student"] == results["student"]
    assert saved["comparison"]["distillation_metric"] == pytest.approx(0.275)
    assert saved["comparison"]["speedup"]["32"] == pytest.approx(4.0)


def test_only_batch_sizes_timed_for_both_models_are_compared(results):
    del results["student"]["latency"]["32"]
    results["dm_alpha"] = 0.25
    assert list(compare(results)["speedup"]) == ["1"]
    header = render_markdown(results).splitlines()[0]
    assert "b32" not in header and "DM (α=0.25)" in header


def test_ece_column_only_when_both_models_have_it(results):
    results["student"]["ece"] = 0.0412
    assert "ECE" not in render_markdown(results).splitlines()[0]
    results["teacher"]["ece"] = 0.1
    lines = render_markdown(results).splitlines()
    assert lines[0].startswith("| model | params (M) | accuracy (%) | ECE (%) | latency b1 (ms) |")
    assert lines[2].startswith("| teacher: minilm-l6 | 22.71 | 80.00 | 10.00 | 4.00 |")
    assert lines[3].startswith("| student: student | 11.36 | 76.00 | 4.12 | 2.00 |")
