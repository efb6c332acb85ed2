import json

import pytest

from kdkit.report.report import compare, render_markdown, write_report


@pytest.fixture
def results():
    teacher = {"name": "minilm-l6", "params": 22_713_216, "n": 1000, "metrics": {"accuracy": 0.8},
               "latency": {"1": {"median_s": 0.004, "p90_s": 0.005}, "32": {"median_s": 0.080, "p90_s": 0.09}}}
    student = {"name": "student", "params": 11_356_608, "n": 1000, "metrics": {"accuracy": 0.76},
               "latency": {"32": {"median_s": 0.020, "p90_s": 0.03}, "1": {"median_s": 0.002, "p90_s": 0.003}}}
    return {"task": "classification", "primary_metric": "accuracy", "split": "test", "dm_alpha": 0.5,
            "teacher": teacher, "student": student, "torch_threads": 2}


def test_compare_hand_computed(results):
    derived = compare(results)
    assert set(derived) == {"speedup", "score_ratio", "param_ratio", "distillation_metric"}
    assert derived["speedup"] == {"1": pytest.approx(2.0), "32": pytest.approx(4.0)}
    assert derived["score_ratio"] == pytest.approx(0.95)
    assert derived["param_ratio"] == pytest.approx(0.5)
    assert derived["distillation_metric"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.05)


def test_markdown_table(results):
    lines = render_markdown(results).splitlines()
    assert lines[0] == ("| model | params (M) | accuracy (%) | latency b1 (ms) | latency b32 (ms) | speedup b1 | "
                        "speedup b32 | accuracy ratio | DM (α=0.5) |")
    assert lines[2] == "| teacher: minilm-l6 | 22.71 | 80.00 | 4.00 | 80.00 | 1.00x | 1.00x | 100.0% | — |"
    assert lines[3] == "| student: student | 11.36 | 76.00 | 2.00 | 20.00 | 2.00x | 4.00x | 95.0% | 0.275 |"
    assert "Primary metric: accuracy (higher is better); metrics in %." in lines
    assert "- split: test" in lines and "- torch_threads: 2" in lines and "- task: classification" in lines
    assert not any(line.startswith("- primary_metric") for line in lines)  # said once, in the notes
    assert "calibration" not in render_markdown(results)  # no ECE, no ECE definition


def test_write_report_json_holds_every_number(results, tmp_path):
    md_path, json_path = write_report(tmp_path / "out", results)
    assert md_path.read_text() == render_markdown(results)
    saved = json.loads(json_path.read_text())
    assert saved["teacher"] == results["teacher"] and saved["student"] == results["student"]
    assert saved["primary_metric"] == "accuracy"
    assert saved["comparison"]["distillation_metric"] == pytest.approx(0.275)
    assert saved["comparison"]["score_ratio"] == pytest.approx(0.95)
    assert saved["comparison"]["speedup"]["32"] == pytest.approx(4.0)


def test_only_batch_sizes_timed_for_both_models_are_compared(results):
    del results["student"]["latency"]["32"]
    results["dm_alpha"] = 0.25
    assert list(compare(results)["speedup"]) == ["1"]
    header = render_markdown(results).splitlines()[0]
    assert "b32" not in header and "DM (α=0.25)" in header


def test_every_metric_is_a_column_primary_first_and_ece_is_defined(results):
    results["student"]["metrics"] = {"ece": 0.0412, "accuracy": 0.76}
    results["teacher"]["metrics"] = {"accuracy": 0.8, "f1": 0.75}
    lines = render_markdown(results).splitlines()
    # the teacher's row comes first, so its metrics are met first
    assert lines[0].startswith("| model | params (M) | accuracy (%) | f1 (%) | ece (%) ↓ | latency b1 (ms) |")
    assert lines[2].startswith("| teacher: minilm-l6 | 22.71 | 80.00 | 75.00 | — | 4.00 |")
    assert lines[3].startswith("| student: student | 11.36 | 76.00 | — | 4.12 | 2.00 |")
    assert any(line.startswith("ece: expected calibration error (ECE)") for line in lines)


def test_old_entries_with_top_level_accuracy_and_ece_render_as_before(results):
    new = render_markdown({**results, "teacher": {**results["teacher"], "metrics": {"accuracy": 0.8, "ece": 0.1}},
                           "student": {**results["student"], "metrics": {"accuracy": 0.76, "ece": 0.0412}}})
    old = dict(results)
    del old["primary_metric"], old["task"]
    for role, (accuracy, ece) in (("teacher", (0.8, 0.1)), ("student", (0.76, 0.0412))):
        old[role] = {k: v for k, v in results[role].items() if k != "metrics"} | {"accuracy": accuracy, "ece": ece}
    table = render_markdown(old)
    assert table.splitlines()[:4] == new.splitlines()[:4]
    assert "| student: student | 11.36 | 76.00 | 4.12 |" in table
    assert compare(old)["score_ratio"] == pytest.approx(0.95)


def test_a_retrieval_report_ranks_on_its_primary_metric(results):
    results.update(task="retrieval", primary_metric="mrr@10")
    results["teacher"]["metrics"] = {"recall@100": 0.9, "mrr@10": 0.40}
    results["student"]["metrics"] = {"recall@100": 0.85, "mrr@10": 0.30}
    derived = compare(results)
    assert derived["score_ratio"] == pytest.approx(0.75)
    assert derived["distillation_metric"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.25)
    lines = render_markdown(results).splitlines()
    assert lines[0].startswith("| model | params (M) | mrr@10 (%) | recall@100 (%) | latency b1 (ms) |")
    assert lines[0].endswith("| mrr@10 ratio | DM (α=0.5) |")
    assert lines[3] == "| student: student | 11.36 | 30.00 | 85.00 | 2.00 | 20.00 | 2.00x | 4.00x | 75.0% | 0.375 |"
    assert "Primary metric: mrr@10 (higher is better); metrics in %." in lines


def test_teacher_free_report_is_the_students_row_alone(results):
    del results["teacher"]
    lines = render_markdown(results).splitlines()
    assert lines[0] == "| model | params (M) | accuracy (%) | latency b1 (ms) | latency b32 (ms) |"
    assert lines[2] == "| student: student | 11.36 | 76.00 | 2.00 | 20.00 |" and len(lines[3]) == 0
    assert any(line.startswith("No teacher") for line in lines) and "DM" not in "\n".join(lines)


def test_generation_report_plain_perplexity_tokens_per_second_and_samples(results):
    results["primary_metric"] = "rougeL"
    results["teacher"]["metrics"] = {"rougeL": 0.40, "perplexity": 12.5}
    results["student"]["metrics"] = {"rougeL": 0.30, "perplexity": 20.0}
    results["student"]["tokens_per_s"] = {"1": 50.0, "32": 400.0}
    results["samples"] = [{"prompt": "Article: a | b\nHeadline:", "reference": "ref", "teacher": "t", "student": "s"}]
    lines = render_markdown(results).splitlines()
    assert lines[0].startswith("| model | params (M) | rougeL (%) | perplexity ↓ | latency b1 (ms)")
    assert lines[2].startswith("| teacher: minilm-l6 | 22.71 | 40.00 | 12.50 |")  # perplexity as it is
    assert "Primary metric: rougeL (higher is better); metrics in % except perplexity." in lines
    assert "Generated tokens per second: student 50.0 (b1), 400.0 (b32)." in lines
    assert lines[-3:] == ["| prompt | reference | teacher | student |", "| --- | --- | --- | --- |",
                          "| Article: a \\| b Headline: | ref | t | s |"]


def test_a_teacher_scoring_zero_has_no_ratio_or_dm(results):
    results["teacher"]["metrics"]["accuracy"] = 0.0
    derived = compare(results)
    assert derived["score_ratio"] is None and derived["distillation_metric"] is None
    assert render_markdown(results).splitlines()[3].endswith("| — | — |")
