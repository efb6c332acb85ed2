"""``kdkit compare`` end to end on the tiny models: two runs × two seeds, the leaderboard's numbers recomputed from
the run reports, reuse of finished runs, resume/redo/refuse of the others, and the table and plot files."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml
from PIL import Image

from kdkit import api
from kdkit.errors import ConfigError
from kdkit.report.leaderboard import leaderboard, parse_comparison, run_state
from kdkit.report.leaderboard import render_markdown as render_leaderboard
from kdkit.report.metric import distillation_metric
from kdkit.report.results import metrics_of
from kdkit.report.seeds import paired_interval


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
    primary = board["primary_metric"]
    assert primary == "accuracy"
    assert board["rows"][0]["role"] == "teacher" and len(board["rows"]) == 3
    students = [row for row in board["rows"] if row["role"] == "student"]
    assert [r["score_mean"] for r in students] == sorted((r["score_mean"] for r in students), reverse=True)
    for run, runs in reports.items():
        row = rows[run]
        accuracies = [metrics_of(r["student"])[primary] for r in runs]
        mean = sum(accuracies) / 2
        std = (sum((a - mean) ** 2 for a in accuracies) / (2 - 1)) ** 0.5  # sample std, n - 1
        assert row["n"] == 2 and row["status"] == {"0": "trained", "1": "trained"}
        assert row["score_mean"] == pytest.approx(mean) and row["score_std"] == pytest.approx(std)
        assert row["scores"] == pytest.approx(accuracies)
        teacher = runs[0]["teacher"]
        assert row["teacher_score"] == pytest.approx(metrics_of(teacher)[primary])
        assert row["params"] == runs[0]["student"]["params"] < teacher["params"]
        assert row["dm"] == pytest.approx(0.3 * row["params"] / teacher["params"]
                                          + 0.7 * (1 - mean / metrics_of(teacher)[primary]))
        assert row["latency_ms"]["4"] == pytest.approx(
            1e3 * statistics.median(r["student"]["latency"]["4"]["median_s"] for r in runs))
        for seed, report in enumerate(runs):  # per-example correctness, whose mean is the accuracy
            correct = json.loads((out / run / f"seed-{seed}" / "per_query.json").read_text())["student"]["accuracy"]
            assert len(correct) == report["student"]["n"]
            assert sum(correct.values()) / len(correct) == pytest.approx(metrics_of(report["student"])[primary])
    # the two runs were scored on the same test examples, so their difference has a paired bootstrap interval
    low, high = paired_interval(dict(zip(rows["ce-only"]["seeds"], rows["ce-only"]["dirs"])),
                                dict(zip(rows["kd-t2"]["seeds"], rows["kd-t2"]["dirs"])), primary, n=500)
    assert low <= rows["ce-only"]["score_mean"] - rows["kd-t2"]["score_mean"] <= high
    files = board["files"]
    stored = json.loads((out / "leaderboard.json").read_text())
    assert [r["run"] for r in stored["rows"]] == [r["run"] for r in board["rows"]]
    markdown = (out / "leaderboard.md").read_text()
    assert "kd-t2" in markdown and "ce-only" in markdown and "±" in markdown and "DM (α=0.3)" in markdown
    page = (out / "leaderboard.html").read_text()
    # the leaderboard (header, teacher, 2 runs), then the per-seed table (header, 2 runs): two seeds, no baseline
    assert page.count("<tr>") == 4 + 3 and page.count("<table>") == 2 and "<h2>Per seed</h2>" in page
    with Image.open(files["png"]) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0

    # a second invocation trains nothing: every run is reused and no checkpoint or report is rewritten
    watched = sorted(p for p in out.rglob("*") if p.is_file() and "leaderboard" not in p.name and p.suffix != ".png")
    before = {p: p.stat().st_mtime_ns for p in watched}
    again = api.compare(cmp)
    assert all(status == "reused" for row in again["rows"] if row["role"] == "student"
               for status in row["status"].values())
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert [r["score_mean"] for r in again["rows"]] == [r["score_mean"] for r in board["rows"]]


def test_interrupted_run_is_resumed_and_changed_recipe_is_refused(tiny_recipe, tmp_path, capsys):
    cmp = _comparison(tiny_recipe, tmp_path)
    cmp["runs"], cmp["seeds"] = cmp["runs"][:1], [0, 1]
    api.compare(cmp)
    assert "compare (2/2 to do, 0 reused): kd-t2 seed 1: training in" in capsys.readouterr().out
    run = tmp_path / "cmp" / "kd-t2" / "seed-0"
    (run / "report.json").unlink()  # as if killed after the last checkpoint, before the report
    assert run_state(run, (run / "recipe.yaml").read_text()) == "interrupted"
    board = api.compare(cmp)
    assert board["rows"][1]["status"] == {"0": "resumed", "1": "reused"} and (run / "report.json").is_file()
    assert "compare (1/1 to do, 1 reused): kd-t2 seed 0: resumed in" in capsys.readouterr().out

    changed = {**cmp, "set": ["losses.1.temperature=4.0"]}
    with pytest.raises(ConfigError, match="losses.1.temperature: 2.0 → 4.0"):
        api.compare(changed)
    board = api.compare(changed, overwrite=True)
    assert board["rows"][1]["status"] == {"0": "trained", "1": "trained"}
    assert "temperature: 4.0" in (run / "recipe.yaml").read_text()


def test_finished_only_tabulates_what_is_done_trains_nothing_and_names_the_rest(tiny_recipe, tmp_path):
    cmp = {**_comparison(tiny_recipe, tmp_path), "baseline": "ce-only", "contrasts": [["kd-t2", "ce-only"]]}
    with pytest.raises(ConfigError, match=r"no run of 'tiny-compare' has finished yet \(4 to do\)"):
        api.compare(cmp, finished_only=True)
    assert not (tmp_path / "cmp" / "kd-t2").exists()  # refused before anything was written
    api.compare({**cmp, "runs": cmp["runs"][:1], "baseline": None, "contrasts": []})  # kd-t2, seeds 0 and 1
    interrupted = tmp_path / "cmp" / "kd-t2" / "seed-1"
    (interrupted / "report.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "cmp").rglob("*") if "seed-" in str(p)}
    board = api.compare(cmp, finished_only=True)
    # the baseline and the contrast's other side are left out: no Δ, no pair, and nothing trained or resumed
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cmp").rglob("*") if "seed-" in str(p)} == before
    assert not (tmp_path / "cmp" / "ce-only").exists() and not (interrupted / "report.json").exists()
    assert board["left_out"] == ["kd-t2 seed 1", "ce-only seed 0", "ce-only seed 1"]
    students = [row for row in board["rows"] if row["role"] == "student"]
    assert [(row["run"], row["n"], row["delta"]) for row in students] == [("kd-t2", 1, None)]
    assert board["paired"] == []
    line = "Not finished yet, so not in these tables: kd-t2 seed 1, ce-only seed 0, ce-only seed 1."
    assert line in (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert line in (tmp_path / "cmp" / "leaderboard.html").read_text()
    assert api.compare(cmp)["left_out"] == []  # without the flag the rest is trained (and resumed) as usual


def test_a_run_limited_to_some_seeds_trains_and_shows_only_those(tiny_recipe, tmp_path, capsys):
    cmp = _comparison(tiny_recipe, tmp_path)
    cmp["runs"][0]["seeds"] = [1, 7]  # seed 7 is not the comparison's: ignored
    board = api.compare(cmp)
    assert "run 'kd-t2' limited to seeds [1] (its own 'seeds': [1, 7])" in capsys.readouterr().out
    rows = {row["run"]: row for row in board["rows"] if row["role"] == "student"}
    assert rows["kd-t2"]["seeds"] == [1] and rows["ce-only"]["seeds"] == [0, 1]
    assert not (tmp_path / "cmp" / "kd-t2" / "seed-0").exists()
    per_seed = {row["run"]: row["values"]["accuracy"] for row in board["per_seed"]["rows"]}
    assert set(per_seed["kd-t2"]) == {1} and set(per_seed["ce-only"]) == {0, 1}
    assert "| kd-t2 | — / " in (tmp_path / "cmp" / "leaderboard.md").read_text()  # seed 0: a dash, not a number
    with pytest.raises(ConfigError, match=r"'seeds' repeats a seed: \[1, 1\]"):
        parse_comparison({**cmp, "runs": [{**cmp["runs"][0], "seeds": [1, 1]}]})


def test_a_key_added_since_a_run_was_made_counts_at_its_default(tiny_recipe, tmp_path):
    cmp = _comparison(tiny_recipe, tmp_path)
    cmp["runs"], cmp["seeds"] = cmp["runs"][:1], [0]
    api.compare(cmp)
    run = tmp_path / "cmp" / "kd-t2" / "seed-0"
    stored = yaml.safe_load((run / "recipe.yaml").read_text())
    current = (run / "recipe.yaml").read_text()
    assert stored["training"].pop("warmup_ratio") == 0.0  # as written by a kdkit without that key
    (run / "recipe.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    assert run_state(run, current) == "finished"
    stored["training"]["learning_rate"] = 1.0  # a value that was set, not defaulted, still differs
    (run / "recipe.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    assert run_state(run, current).startswith("stale: training.learning_rate: 1.0 →")
    stored["training"]["retired_key"] = 1  # a key kdkit no longer knows: the stored recipe is compared as is
    (run / "recipe.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    assert run_state(run, current).startswith("stale: training.learning_rate")


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


def _entry(score, params, latency, primary="accuracy", **others):
    return {"name": "m", "params": params, "n": 8, "metrics": {primary: score, **others},
            "latency": {"1": {"median_s": latency, "p90_s": latency}}}


def _report(student_acc, teacher_acc=0.8, params=10, latency=0.01, **others):
    return {"task": "classification", "primary_metric": "accuracy", "teacher_source": "t",
            "teacher": _entry(teacher_acc, 100, 0.04, **others),
            "student": _entry(student_acc, params, latency, **others)}


def _item(report, seed=0):
    return {"seed": seed, "status": "trained", "dir": "", "report": report}


def test_teacher_trained_per_seed_has_its_spread_over_seeds_not_over_runs():
    # dataset distillation trains the "teacher" (all real data) once per seed and every run scores it: 2 runs x 3
    # seeds give 6 evaluations but 3 values; the std is theirs (pooling the 6 would shrink it by sqrt(4/5))
    teacher_by_seed = [0.80, 0.84, 0.90]
    results = {name: [_item(_report(0.7, t), s) for s, t in enumerate(teacher_by_seed)] for name in ("soft", "hard")}
    teacher = leaderboard(results)["rows"][0]
    assert teacher["role"] == "teacher" and teacher["evaluations"] == 6 and teacher["n"] == 3
    assert teacher["score_mean"] == pytest.approx(statistics.fmean(teacher_by_seed))
    assert teacher["score_std"] == pytest.approx(statistics.stdev(teacher_by_seed))
    # a seed scored by one run only counts once, like the others
    results["soft"].append(_item(_report(0.7, 0.60), 3))
    assert leaderboard(results)["rows"][0]["score_mean"] == pytest.approx(statistics.fmean(teacher_by_seed + [0.60]))


def test_leaderboard_statistics_and_pareto_front_by_hand():
    results = {"small": [_item(_report(a, params=10, latency=t), s)
                         for s, (a, t) in enumerate([(0.6, 0.01), (0.7, 0.02), (0.8, 0.04)])],
               "big-worse": [_item(_report(0.5, params=50))]}
    board = leaderboard(results, alpha=0.5)
    assert board["primary_metric"] == "accuracy"
    teacher, small, big = board["rows"]
    assert (teacher["run"], small["run"], big["run"]) == ("teacher: m", "small", "big-worse")
    assert small["score_mean"] == pytest.approx(0.7) and small["score_std"] == pytest.approx(0.1)
    assert small["scores"] == pytest.approx([0.6, 0.7, 0.8]) and small["teacher_score"] == pytest.approx(0.8)
    assert teacher["score_mean"] == teacher["teacher_score"] == pytest.approx(0.8) and teacher["evaluations"] == 4
    assert teacher["score_std"] is None  # one model, scored identically by every run
    assert big["score_std"] is None  # one seed: no sample std
    assert small["speedup"]["1"] == pytest.approx(2.0)  # median of 4, 2, 1
    assert small["latency_ms"]["1"] == pytest.approx(20.0)
    assert small["dm"] == pytest.approx(distillation_metric(10, 100, 0.7, 0.8, 0.5))
    assert teacher["pareto"] and small["pareto"] and not big["pareto"]
    assert small["metrics_mean"] == {}  # no metric besides the primary one


def _seeds(*accuracies, params=10):
    return [_item(_report(a, params=params), s) for s, a in enumerate(accuracies)]


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


def test_other_metrics_are_averaged_over_seeds_and_shown_after_the_primary():
    results = {"kd": [_item(_report(0.7, ece=0.10), 0), _item(_report(0.8, ece=0.20), 1)],
               "ce": [_item(_report(0.6, ece=0.05), 0)]}
    board = leaderboard(results, alpha=0.5, baseline="ce")
    rows = {row["run"]: row for row in board["rows"]}
    assert rows["kd"]["metrics_mean"] == {"ece": pytest.approx(0.15)}
    assert rows["teacher: m"]["metrics_mean"] == {"ece": pytest.approx(0.35 / 3)}  # its 3 evaluations: .1, .2, .05
    lines = render_leaderboard(board).splitlines()
    assert lines[2] == ("| run | seeds | accuracy (%) | Δ vs ce (pp) | ece (%) ↓ | teacher accuracy (%) "
                        "| params (M) | latency b1 (ms) | speedup b1 | DM (α=0.5) | Pareto |")
    assert lines[5] == ("| kd | 2 | 75.00 ± 7.07 | +15.00 | 15.00 | 80.00 | 0.000 | 10.00 | 4.00x "
                        f"| {distillation_metric(10, 100, 0.75, 0.8):.3f} | yes |")
    assert "ece: expected calibration error (ECE)" in lines[-1]


def test_a_plain_primary_metric_is_shown_and_compared_in_its_own_units(tmp_path):
    def policy(*returns):
        return [_item({"task": "policy_distillation", "primary_metric": "return",
                       "student": _entry(r, 10, 0.01, primary="return")}, s) for s, r in enumerate(returns)]

    board = leaderboard({"dpd": policy(-200.0, -100.0), "ppo": policy(-300.0, -250.0)}, alpha=0.5, baseline="ppo")
    lines = render_leaderboard(board).splitlines()
    assert lines[2].startswith("| run | seeds | return | Δ vs ppo | teacher return | params (M) |")
    # Δ = −150 − (−275); its standard error √(70.71²/2 + 35.36²/2) = √3125 = 55.90; not ×100, not in pp
    assert lines[4].startswith("| dpd | 2 | -150.00 ± 70.71 | +125.00 ± 55.90 | — |")
    note = lines[-1]
    assert "over seeds, in its own units;" in note and "baseline run, in the metric's own units," in note
    assert "in %" not in note and "percentage points" not in note
    rows = {row["run"]: row for row in board["rows"]}
    assert rows["dpd"]["dm"] is None  # no teacher, no distillation metric
    from kdkit.report.leaderboard import _versus_baseline, plot_pareto

    assert _versus_baseline(board) == "Above ppo: dpd (+125.00 ± 55.90). Not above ppo: none."
    plot_pareto(board, tmp_path / "returns.png", "returns")
    assert (tmp_path / "returns.png").stat().st_size > 1000


def test_old_format_reports_still_aggregate_beside_new_ones():
    """Runs finished by earlier versions (top-level accuracy/ece, no primary_metric) are reused by compare."""
    def old(accuracy, teacher_accuracy=0.8):
        new = _report(accuracy, teacher_accuracy, ece=0.1)
        del new["primary_metric"], new["task"]
        for role in ("teacher", "student"):
            metrics = new[role].pop("metrics")
            new[role].update(metrics)
        return new

    assert "metrics" not in old(0.7)["student"] and old(0.7)["student"]["accuracy"] == 0.7
    results = {"old": [_item(old(0.70), 0), _item(old(0.74), 1)], "new": [_item(_report(0.75, ece=0.3))]}
    board = leaderboard(results, alpha=0.5, baseline="old")
    assert board["primary_metric"] == "accuracy"
    teacher, new, previous = board["rows"]
    assert (new["run"], previous["run"]) == ("new", "old")
    assert previous["score_mean"] == pytest.approx(0.72) and previous["scores"] == pytest.approx([0.70, 0.74])
    assert previous["metrics_mean"] == {"ece": pytest.approx(0.1)} and previous["teacher_score"] == pytest.approx(0.8)
    assert previous["dm"] == pytest.approx(distillation_metric(10, 100, 0.72, 0.8))
    assert new["delta"] == pytest.approx(0.03) and teacher["evaluations"] == 3
    assert "| old | 2 | 72.00 ± 2.83 | +0.00 | 10.00 | 80.00 |" in render_leaderboard(board)


def _retrieval(mrr, teacher_mrr=0.40, params=10):
    return {"task": "retrieval", "primary_metric": "mrr@10", "teacher_source": "t",
            "teacher": _entry(teacher_mrr, 100, 0.04, "mrr@10", **{"recall@100": 0.9}),
            "student": _entry(mrr, params, 0.01, "mrr@10", **{"recall@100": 0.8})}


def test_a_retrieval_leaderboard_ranks_and_renders_on_mrr_at_10():
    results = {"margin-mse": [_item(_retrieval(0.30), 0), _item(_retrieval(0.34), 1)],
               "bm25-negatives": [_item(_retrieval(0.36, params=50), 0)]}
    board = leaderboard(results, alpha=0.5, baseline="margin-mse")
    assert board["primary_metric"] == "mrr@10"
    teacher, best, base = board["rows"]
    assert (best["run"], base["run"]) == ("bm25-negatives", "margin-mse")  # sorted by MRR@10, not by size
    assert base["score_mean"] == pytest.approx(0.32) and base["teacher_score"] == pytest.approx(0.40)
    assert base["metrics_mean"] == {"recall@100": pytest.approx(0.8)}
    assert base["dm"] == pytest.approx(distillation_metric(10, 100, 0.32, 0.40))
    assert best["delta"] == pytest.approx(0.04)
    assert teacher["pareto"] and best["pareto"] and base["pareto"]  # each is smallest or best among the others
    markdown = render_leaderboard(board, title="Retrieval")
    header = next(line for line in markdown.splitlines() if line.startswith("| run"))
    assert header.startswith("| run | seeds | mrr@10 (%) | Δ vs margin-mse (pp) | recall@100 (%) "
                             "| teacher mrr@10 (%) |")
    assert "| margin-mse | 2 | 32.00 ± 2.83 | +0.00 | 80.00 | 40.00 | 0.000 |" in markdown
    assert "Primary metric: mrr@10 (higher is better)" in markdown
    assert "accuracy" not in markdown and "calibration" not in markdown


def test_untrained_references_become_rows_counted_once_per_seed_with_their_index_size():
    def report(mrr, seed_shift=0.0):
        found = _retrieval(mrr)
        found["student"]["index_mb"], found["teacher"]["index_mb"] = 3.2, 202.0
        found["references"] = {"BM25": {**_entry(0.30 + seed_shift, 0, 0.0002, "mrr@10", **{"recall@100": 0.7}),
                                        "index_mb": 3.3}}
        return found

    results = {"tct": [_item(report(0.35), 0), _item(report(0.37, 0.02), 1)], "ce": [_item(report(0.33), 0)]}
    board = leaderboard(results)
    bm25 = next(row for row in board["rows"] if row["run"] == "reference: BM25")
    assert bm25["role"] == "reference" and bm25["n"] == 2  # measured by three runs, over two seeds
    assert bm25["score_mean"] == pytest.approx((0.30 * 2 + 0.32) / 3) and bm25["index_mb"] == pytest.approx(3.3)
    assert bm25["dm"] is None and bm25["speedup"] == {}
    markdown = render_leaderboard(board)
    assert "| index (MB) |" in markdown.splitlines()[2]
    assert "| 202.0 |" in markdown and "| 3.2 |" in markdown
    assert [row["role"] for row in board["rows"]] == ["teacher", "reference", "student", "student"]


def test_untrained_models_scored_under_different_settings_get_a_row_each_named_by_the_setting(tmp_path):
    def item(name, seed, max_length, zero_shot, teacher_mrr):
        folder = tmp_path / name / f"seed-{seed}"
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(yaml.safe_dump({"data": {"max_length": max_length, "seed": 0},
                                                            "evaluation": {"split": "validation"},
                                                            "training": {"seed": seed}}))
        found = _retrieval(0.35, teacher_mrr=teacher_mrr)
        found["references"] = {"BM25": _entry(0.30, 0, 0.0002, "mrr@10"),  # BM25 cuts no passage: alike
                               "zero-shot": _entry(zero_shot, 10, 0.001, "mrr@10")}
        return {"seed": seed, "status": "trained", "dir": str(folder), "report": found}

    results = {"long": [item("long", 0, 256, 0.20, 0.41)],
               "short": [item("short", 0, 128, 0.25, 0.40), item("short", 1, 128, 0.25, 0.40)]}
    rows = {row["run"]: row for row in leaderboard(results)["rows"] if row["role"] != "student"}
    assert set(rows) == {"reference: BM25", "reference: zero-shot · data.max_length=256",
                         "reference: zero-shot · data.max_length=128", "teacher: m · data.max_length=256",
                         "teacher: m · data.max_length=128"}
    assert rows["reference: zero-shot · data.max_length=128"]["score_mean"] == pytest.approx(0.25)
    assert rows["reference: zero-shot · data.max_length=256"]["n"] == 1 and rows["reference: BM25"]["n"] == 2
    assert rows["teacher: m · data.max_length=256"]["score_mean"] == pytest.approx(0.41)
    # the same teacher scored alike under both settings (it reads no passage the cut changes): one row
    results["long"][0]["report"]["teacher"] = results["short"][0]["report"]["teacher"]
    assert [row["run"] for row in leaderboard(results)["rows"] if row["role"] == "teacher"] == ["teacher: m"]


def test_runs_scored_on_different_primary_metrics_are_refused():
    results = {"kd": [_item(_report(0.7))], "retrieval": [_item(_retrieval(0.3))]}
    with pytest.raises(ConfigError, match="different primary metrics \\(kd: accuracy, retrieval: mrr@10\\)"):
        leaderboard(results)


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
    assert "Tiny models, **two** runs." in text and "Δ vs ce-only (pp)" in text and "ece (%) ↓" in text
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


def _tick_texts(fig, axis: str, minor: bool = False) -> list[str]:
    fig.canvas.draw()  # tick labels are only formatted when drawn
    ax = fig.axes[0]
    labels = ax.get_xticklabels(minor=minor) if axis == "x" else ax.get_yticklabels(minor=minor)
    return [label.get_text() for label in labels]


def test_runs_of_one_student_size_are_drawn_one_line_each_sorted_with_the_teacher_as_a_line(tmp_path):
    import matplotlib.pyplot as plt

    from kdkit.report.leaderboard import pareto_figure, plot_pareto

    board = leaderboard({"kd": _seeds(0.70, 0.72, 0.74), "ce": _seeds(0.60), "ckd": _seeds(0.75, 0.77)})
    fig, kind = pareto_figure(board, "losses")
    ax = fig.axes[0]
    assert kind == "runs" and ax.get_xscale() == "linear"
    # best on top: matplotlib counts y upwards, so the labels read bottom to top
    assert _tick_texts(fig, "y") == ["ce  60.00", "kd  72.00 ± 2.00", "ckd  76.00 ± 1.41"]
    assert ax.get_xlabel() == "accuracy (%)" and ax.get_title() == "losses (10 parameters each)"
    bars = ax.containers[0]
    assert bars.has_xerr and not bars.has_yerr
    assert list(bars.lines[0].get_xdata()) == pytest.approx([60.0, 72.0, 76.0])
    teacher_lines = [line for line in ax.get_lines() if list(line.get_xdata()) == pytest.approx([80.0, 80.0])]
    assert len(teacher_lines) == 1 and teacher_lines[0].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["teacher: m  80.00"]
    assert all(text.replace(".", "").isdigit() for text in _tick_texts(fig, "x") if text)
    plt.close(fig)
    with Image.open(plot_pareto(board, tmp_path / "runs.png", "losses")) as image:
        assert image.format == "PNG" and image.size[1] < image.size[0]


def test_students_of_several_sizes_are_plotted_against_plainly_labelled_parameters():
    import matplotlib.pyplot as plt

    from kdkit.report.leaderboard import pareto_figure

    def run(accuracy, params):
        report = _report(accuracy, params=params)
        report["teacher"]["params"] = 110_000_000
        return [_item(report)]

    board = leaderboard({"small": run(0.70, 20_000_000), "mid": run(0.74, 50_000_000)})
    fig, kind = pareto_figure(board, "sizes")
    ax = fig.axes[0]
    assert kind == "params" and ax.get_xscale() == "log" and ax.get_ylabel() == "accuracy (%)"
    assert _tick_texts(fig, "x") == ["20M", "50M", "100M"]
    minor = _tick_texts(fig, "x", minor=True)
    assert minor and set(minor) == {""}  # 30M, 40M, ... marked but unlabelled: never 3×10¹
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["teacher: m  80.00", "mid  74.00", "small  70.00"] and legend[-1] == "Pareto front"
    plt.close(fig)


def test_sizes_too_close_for_a_1_2_5_tick_are_labelled_with_their_own_counts():
    import matplotlib.pyplot as plt

    from kdkit.report.leaderboard import pareto_figure

    def solo(accuracy, params):  # teacher-free runs: no 100-parameter teacher to widen the axis
        report = _report(accuracy, params=params)
        del report["teacher"]
        return [_item(report)]

    fig, kind = pareto_figure(leaderboard({"a": solo(0.7, 13_700_000), "b": solo(0.71, 14_600_000)}))
    assert kind == "params" and _tick_texts(fig, "x") == ["13.7M", "14.6M"]
    plt.close(fig)


def test_single_seed_runs_with_per_example_scores_get_a_paired_bootstrap_interval(tmp_path):
    import json

    from kdkit.report.bootstrap import bootstrap_runs

    values = {"base": [0.2, 0.4, 0.1, 0.5, 0.3, 0.2], "better": [0.3, 0.5, 0.3, 0.5, 0.4, 0.4]}
    results = {}
    for name, scores in values.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_query.json").write_text(json.dumps(
            {"student": {"accuracy": {str(i): v for i, v in enumerate(scores)}}}))
        results[name] = [{"seed": 0, "status": "trained", "dir": str(tmp_path / name),
                          "report": _report(sum(scores) / len(scores))}]
    results["no-file"] = _seeds(0.5)
    board = leaderboard(results, alpha=0.5, baseline="base")
    rows = {row["run"]: row for row in board["rows"]}
    expected = bootstrap_runs(tmp_path / "better", tmp_path / "base", metric="accuracy")
    assert rows["better"]["delta_ci"] == [expected["ci_low"], expected["ci_high"]]
    assert 0 < expected["ci_low"] <= rows["better"]["delta"] <= expected["ci_high"]
    assert rows["base"]["delta_ci"] is None and rows["no-file"]["delta_ci"] is None
    line = next(line for line in render_leaderboard(board).splitlines() if line.startswith("| better"))
    assert f"| +{100 * rows['better']['delta']:.2f} [+{100 * expected['ci_low']:.2f}, " in line


def test_training_time_is_a_column_only_when_reports_have_it():
    def timed(acc, seconds):
        return {**_report(acc), "variants": {"int8": _entry(acc, 10, 0.005)}} | (
            {} if seconds is None else {"train_seconds": seconds})

    results = {"kd": [_item(timed(0.7, 60.0), 0), _item(timed(0.8, 180.0), 1), _item(timed(0.75, 600.0), 2)],
               "old": [_item(timed(0.6, 60.0), 0), _item(timed(0.6, None), 1)]}
    board = leaderboard(results, alpha=0.5)
    rows = {row["run"]: row for row in board["rows"]}
    assert rows["kd"]["train_minutes"] == 3.0  # the median of 1, 3 and 10 minutes
    assert rows["old"]["train_minutes"] is None  # a seed's report predates it: no median of the others
    assert rows["kd · int8"]["train_minutes"] is None  # a variant is not trained on its own
    lines = render_leaderboard(board).splitlines()
    header = [cell.strip() for cell in lines[2].split("|")]
    column = header.index("train (min)")
    assert header[column - 1] == "params (M)" and header[column + 1] == "latency b1 (ms)"
    table = lines[4:lines.index("", 4)]  # the leaderboard's rows (per-seed tables follow)
    cells = {line.split("|")[1].strip(): line.split("|")[column].strip() for line in table}
    assert cells["kd"] == "3.0" and cells["old"] == "—" and cells["kd · int8"] == "—" and cells["teacher: m"] == "—"
    assert "Train: median over seeds of training's wall time" in lines[-1]

    untimed = {"old": [_item(timed(0.6, None), 0)]}
    text = render_leaderboard(leaderboard(untimed, alpha=0.5))
    assert "train (min)" not in text and "Train:" not in text
