"""``kdkit compare`` end to end on the tiny models: two runs × two seeds, the leaderboard's numbers recomputed from
the run reports, reuse of finished runs, resume/redo/refuse of the others, and the table and plot files."""

from __future__ import annotations

import json
import statistics

import pytest
from PIL import Image

from kdkit import api
from kdkit.errors import ConfigError
from kdkit.report.leaderboard import leaderboard, parse_comparison, run_state
from kdkit.report.metric import distillation_metric


def _comparison(tiny_recipe, tmp_path) -> dict:
    tiny_recipe["training"].update(max_steps=2, save_steps=2, report_to=[])
    tiny_recipe["evaluation"]["latency_repeats"] = 1
    return {"name": "tiny-compare", "output_dir": str(tmp_path / "cmp"), "seeds": [0, 1], "alpha": 0.3,
            "runs": [{"name": "kd-t2", "recipe": tiny_recipe},
                     {"name": "ce-only", "recipe": tiny_recipe, "set": ["losses.1.weight=0.0"]}]}


def test_compare_end_to_end_numbers_files_and_reuse(tiny_recipe, tmp_path):
    cmp = _comparison(tiny_recipe, tmp_path)
    board = api.compare(cmp)
    out = tmp_path / "cmp"
    reports = {run: [json.loads((out / run / f"seed-{s}" / "report.json").read_text()) for s in (0, 1)]
               for run in ("kd-t2", "ce-only")}
    assert "seed: 1" in (out / "kd-t2" / "seed-1" / "recipe.yaml").read_text()
    rows = {row["run"]: row for row in board["rows"]}
    assert board["rows"][0]["role"] == "teacher" and len(board["rows"]) == 3
    students = [row for row in board["rows"] if row["role"] == "student"]
    assert [r["accuracy_mean"] for r in students] == sorted((r["accuracy_mean"] for r in students), reverse=True)
    for run, runs in reports.items():
        row = rows[run]
        accuracies = [r["student"]["accuracy"] for r in runs]
        mean = sum(accuracies) / 2
        std = (sum((a - mean) ** 2 for a in accuracies) / (2 - 1)) ** 0.5  # sample std, n - 1
        assert row["n"] == 2 and row["status"] == {"0": "trained", "1": "trained"}
        assert row["accuracy_mean"] == pytest.approx(mean) and row["accuracy_std"] == pytest.approx(std)
        teacher = runs[0]["teacher"]
        assert row["teacher_accuracy"] == pytest.approx(teacher["accuracy"])
        assert row["params"] == runs[0]["student"]["params"] < teacher["params"]
        assert row["dm"] == pytest.approx(0.3 * row["params"] / teacher["params"]
                                          + 0.7 * (1 - mean / teacher["accuracy"]))
        assert row["latency_ms"]["4"] == pytest.approx(
            1e3 * statistics.median(r["student"]["latency"]["4"]["median_s"] for r in runs))
    files = board["files"]
    stored = json.loads((out / "leaderboard.json").read_text())
    assert [r["run"] for r in stored["rows"]] == [r["run"] for r in board["rows"]]
    markdown = (out / "leaderboard.md").read_text()
    assert "kd-t2" in markdown and "ce-only" in markdown and "±" in markdown and "DM (α=0.3)" in markdown
    page = (out / "leaderboard.html").read_text()
    assert page.count("<tr>") == 4 and "<table>" in page
    with Image.open(files["png"]) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0

    # a second invocation trains nothing: every run is reused and no checkpoint or report is rewritten
    watched = sorted(p for p in out.rglob("*") if p.is_file() and "leaderboard" not in p.name and p.suffix != ".png")
    before = {p: p.stat().st_mtime_ns for p in watched}
    again = api.compare(cmp)
    assert all(status == "reused" for row in again["rows"] if row["role"] == "student"
               for status in row["status"].values())
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert [r["accuracy_mean"] for r in again["rows"]] == [r["accuracy_mean"] for r in board["rows"]]


def test_interrupted_run_is_resumed_and_changed_recipe_is_refused(tiny_recipe, tmp_path):
    cmp = _comparison(tiny_recipe, tmp_path)
    cmp["runs"], cmp["seeds"] = cmp["runs"][:1], [0]
    api.compare(cmp)
    run = tmp_path / "cmp" / "kd-t2" / "seed-0"
    (run / "report.json").unlink()  # as if killed after the last checkpoint, before the report
    assert run_state(run, (run / "recipe.yaml").read_text()) == "interrupted"
    board = api.compare(cmp)
    assert board["rows"][1]["status"] == {"0": "resumed"} and (run / "report.json").is_file()

    changed = {**cmp, "set": ["losses.1.temperature=4.0"]}
    with pytest.raises(ConfigError, match="losses.1.temperature: 2.0 → 4.0"):
        api.compare(changed)
    board = api.compare(changed, overwrite=True)
    assert board["rows"][1]["status"] == {"0": "trained"}
    assert "temperature: 4.0" in (run / "recipe.yaml").read_text()


def test_grid_expands_every_combination_and_names_its_runs():
    cmp = parse_comparison({"grid": {"recipe": "quickstart", "keys": {"losses.1.temperature": [2, 4],
                                                                      "training.learning_rate": [1e-4]}}})
    runs = cmp.expanded_runs()
    assert [r.name for r in runs] == ["quickstart-temperature=2-learning_rate=0.0001",
                                      "quickstart-temperature=4-learning_rate=0.0001"]
    assert runs[1].set == ["losses.1.temperature=4", "training.learning_rate=0.0001"]


@pytest.mark.parametrize("data, expected", [
    ({"seeds": [0]}, "needs 'runs' or 'grid'"),
    ({"runs": [{"name": "a", "recipe": "x"}, {"name": "a", "recipe": "y"}]}, "repeated: a"),
    ({"runs": [{"name": "a", "recipe": "x"}], "seeds": [1, 1]}, "repeats a seed"),
    ({"runs": [{"name": "a", "recipe": "x"}], "alpha": 2}, "alpha"),
    ({"runs": [{"name": "a", "recipe": "x", "sets": []}]}, "runs.0.sets' is unknown"),
])
def test_bad_comparison_is_one_line_naming_the_key(data, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        parse_comparison(data)


def _report(student_acc, teacher_acc=0.8, params=10, latency=0.01):
    entry = lambda acc, p, t: {"name": "m", "params": p, "accuracy": acc,  # noqa: E731
                               "latency": {"1": {"median_s": t, "p90_s": t}}}
    return {"teacher": entry(teacher_acc, 100, 0.04), "student": entry(student_acc, params, latency),
            "teacher_source": "t"}


def test_leaderboard_statistics_and_pareto_front_by_hand():
    results = {"small": [{"seed": s, "status": "trained", "dir": "", "report": _report(a, params=10, latency=t)}
                         for s, (a, t) in enumerate([(0.6, 0.01), (0.7, 0.02), (0.8, 0.04)])],
               "big-worse": [{"seed": 0, "status": "trained", "dir": "", "report": _report(0.5, params=50)}]}
    board = leaderboard(results, alpha=0.5)
    teacher, small, big = board["rows"]
    assert (teacher["run"], small["run"], big["run"]) == ("teacher: m", "small", "big-worse")
    assert small["accuracy_mean"] == pytest.approx(0.7) and small["accuracy_std"] == pytest.approx(0.1)
    assert big["accuracy_std"] is None  # one seed: no sample std
    assert small["speedup"]["1"] == pytest.approx(2.0)  # median of 4, 2, 1
    assert small["latency_ms"]["1"] == pytest.approx(20.0)
    assert small["dm"] == pytest.approx(distillation_metric(10, 100, 0.7, 0.8, 0.5))
    assert teacher["pareto"] and small["pareto"] and not big["pareto"]


def _seeds(*accuracies, params=10):
    return [{"seed": s, "status": "trained", "dir": "", "report": _report(a, params=params)}
            for s, a in enumerate(accuracies)]


def test_baseline_difference_and_its_standard_error_by_hand():
    results = {"kd": _seeds(0.70, 0.72, 0.74), "ckd": _seeds(0.73, 0.75, 0.74), "one-seed": _seeds(0.60)}
    board = leaderboard(results, alpha=0.5, baseline="kd")
    rows = {row["run"]: row for row in board["rows"]}
    assert rows["ckd"]["delta"] == pytest.approx(0.74 - 0.72)
    # s_ckd = 0.01, s_kd = 0.02, n = 3 each: sqrt(0.01²/3 + 0.02²/3)
    assert rows["ckd"]["delta_std"] == pytest.approx(((0.01 ** 2 + 0.02 ** 2) / 3) ** 0.5)
    assert rows["kd"]["delta"] == 0 and rows["kd"]["delta_std"] is None  # no error bar against itself
    assert rows["one-seed"]["delta_std"] is None
    assert rows["teacher: m"]["delta"] is None
    assert leaderboard(results)["rows"][1]["delta"] is None  # no baseline, no differences


def test_baseline_must_name_a_run(tiny_recipe):
    with pytest.raises(ConfigError, match="baseline 'kd' is not a run"):
        parse_comparison({"runs": [{"name": "ce", "recipe": tiny_recipe}], "baseline": "kd"})


def test_document_gathers_comparisons_with_their_baseline_verdicts(tiny_recipe, tmp_path):
    cmp = _comparison(tiny_recipe, tmp_path)
    cmp.update(seeds=[0], baseline="ce-only", description="Tiny models, **two** runs.")
    path = tmp_path / "docs" / "results.md"
    (tmp_path / "cmp.yaml").write_text(__import__("yaml").safe_dump(cmp))
    written = api.compare_document([tmp_path / "cmp.yaml"], path, preamble="Made by one command.")
    text = written.read_text()
    assert text.startswith("# Results") and "Made by one command." in text and "## tiny-compare" in text
    assert "Tiny models, **two** runs." in text and "Δ vs ce-only (pp)" in text and "ECE (%)" in text
    board = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())
    kd = next(row for row in board["rows"] if row["run"] == "kd-t2")
    line = next(line for line in text.splitlines() if line.startswith("Above ce-only:"))
    above, not_above = line.split(" Not above ce-only: ")
    assert f"kd-t2 ({100 * kd['delta']:+.2f} pp)" in (above if kd["delta"] > 0 else not_above)
    with Image.open(tmp_path / "docs" / "results" / "tiny-compare.png") as image:
        assert image.format == "PNG"
    assert "](results/tiny-compare.png)" in text
    stored = json.loads((tmp_path / "docs" / "results" / "tiny-compare.json").read_text())
    assert [r["run"] for r in stored["rows"]] == [r["run"] for r in board["rows"]]
