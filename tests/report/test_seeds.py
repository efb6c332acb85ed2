"""Per-seed tables and differences paired by seed (``kdkit.report.seeds``), by hand, and through the leaderboard."""

from __future__ import annotations

import json
import math

import pytest

from kdkit.errors import ConfigError
from kdkit.report.bootstrap import paired_bootstrap
from kdkit.report.leaderboard import leaderboard, parse_comparison
from kdkit.report.leaderboard import render_html
from kdkit.report.leaderboard import render_markdown as render_leaderboard


def _report(accuracy, ece):
    entry = {"name": "m", "params": 10, "n": 4, "metrics": {"accuracy": accuracy, "ece": ece},
             "latency": {"1": {"median_s": 0.01, "p90_s": 0.01}}}
    return {"task": "classification", "primary_metric": "accuracy", "student": entry}


def _runs(**runs):
    return {name: [{"seed": s, "status": "trained", "dir": "", "report": _report(a, e)}
                   for s, (a, e) in enumerate(values)] for name, values in runs.items()}


RESULTS = _runs(ce=[(0.70, 0.10), (0.66, 0.08), (0.74, 0.06)],
                ls=[(0.71, 0.12), (0.66, 0.11), (0.75, 0.09)],
                beta=[(0.73, 0.07), (0.69, 0.06), (0.74, 0.05)])


def test_paired_differences_by_hand_are_tighter_than_unpaired_when_seeds_move_runs_alike():
    board = leaderboard(RESULTS, baseline="ce", contrasts=[("beta", "ls")])
    paired = {(d["a"], d["b"]): d for d in board["paired"]}
    assert list(paired) == [("beta", "ls"), ("ls", "ce"), ("beta", "ce")]  # the contrasts first, then vs baseline
    beta_ls = paired["beta", "ls"]
    # accuracy: +0.02, +0.03, -0.01 -> mean 0.04/3, sd of the three over sqrt(3)
    d = [0.02, 0.03, -0.01]
    mean = sum(d) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 2) / math.sqrt(3)
    assert beta_ls["seeds"] == [0, 1, 2]
    assert beta_ls["differences"]["accuracy"]["mean"] == pytest.approx(mean)
    assert beta_ls["differences"]["accuracy"]["se"] == pytest.approx(se)
    # ece: -0.05, -0.05, -0.04
    assert beta_ls["differences"]["ece"]["mean"] == pytest.approx(-0.14 / 3)
    assert beta_ls["ci"] is None  # no per-example files
    ls_ce = paired["ls", "ce"]["differences"]["accuracy"]  # +0.01, 0, +0.01: paired s.e. far under the unpaired one
    rows = {row["run"]: row for row in board["rows"]}
    assert ls_ce["mean"] == pytest.approx(rows["ls"]["delta"])
    assert ls_ce["se"] < rows["ls"]["delta_std"] / 5


def test_per_seed_table_lists_every_metric_seed_by_seed_and_renders_both_tables():
    board = leaderboard(RESULTS, baseline="ce", contrasts=[("beta", "ls")])
    table = board["per_seed"]
    assert table["seeds"] == [0, 1, 2] and table["metrics"] == ["accuracy", "ece"]
    beta = next(row for row in table["rows"] if row["run"] == "beta")
    assert beta["values"]["ece"] == {0: 0.07, 1: 0.06, 2: 0.05}
    lines = render_leaderboard(board).splitlines()
    assert "| beta | 73.00 / 69.00 / 74.00 | 7.00 / 6.00 / 5.00 |" in lines
    assert "| beta − ls | 3 | +1.33 ± 1.20 | -4.67 ± 0.33 | — |" in lines
    assert "Differences paired by seed:" in lines and "Per seed:" in lines
    page = render_html(board)
    assert page.count("<table>") == 3 and "<td>beta − ls</td><td>3</td><td>+1.33 ± 1.20</td>" in page


def test_one_seed_boards_have_no_seed_tables_unless_a_contrast_is_asked_for():
    one = {name: items[:1] for name, items in RESULTS.items()}
    board = leaderboard(one, baseline="ce")
    assert board["per_seed"] is None and board["paired"] == []
    assert "Per seed:" not in render_leaderboard(board)
    asked = leaderboard(one, contrasts=[("beta", "ls")])["paired"]
    assert len(asked) == 1 and asked[0]["differences"]["accuracy"]["se"] is None


def test_the_bootstrap_interval_pools_the_examples_of_every_shared_seed(tmp_path):
    scores = {"a": {0: [1, 1, 0, 1], 1: [1, 0, 1, 1]}, "b": {0: [0, 1, 0, 1], 1: [1, 0, 0, 1]}}
    results = {}
    for name, by_seed in scores.items():
        results[name] = []
        for seed, values in by_seed.items():
            folder = tmp_path / name / str(seed)
            folder.mkdir(parents=True)
            (folder / "per_query.json").write_text(json.dumps(
                {"student": {"accuracy": {f"q{i}": v for i, v in enumerate(values)}}}))
            results[name].append({"seed": seed, "status": "trained", "dir": str(folder),
                                  "report": _report(sum(values) / 4, 0.1)})
    (d,) = leaderboard(results, contrasts=[("a", "b")])["paired"]
    expected = paired_bootstrap(scores["a"][0] + scores["a"][1], scores["b"][0] + scores["b"][1], n=10_000, seed=0)
    assert d["ci"] == [expected["ci_low"], expected["ci_high"]]
    assert d["differences"]["accuracy"]["mean"] == pytest.approx(0.25)


def test_each_folder_s_scores_are_read_once_however_many_pairs_use_it(tmp_path, monkeypatch):
    import kdkit.report.seeds as seeds
    results, reads = {}, []
    for name, values in {"base": [1, 0, 1, 0], "x": [1, 1, 1, 0], "y": [0, 1, 1, 1]}.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "per_query.json").write_text(json.dumps(
            {"student": {"accuracy": {f"q{i}": v for i, v in enumerate(values)}}}))
        results[name] = [{"seed": 0, "status": "trained", "dir": str(folder), "report": _report(sum(values) / 4, 0.1)}]
    real = seeds.per_example
    monkeypatch.setattr(seeds, "per_example", lambda folder, metric: reads.append(folder) or real(folder, metric))
    out = seeds.paired_differences(results, [("x", "base"), ("y", "base"), ("x", "y")], "accuracy")
    assert [d["ci"] is not None for d in out] == [True, True, True]
    assert sorted(reads) == sorted(str(tmp_path / n) for n in ("base", "x", "y"))


@pytest.mark.parametrize("contrasts, expected", [
    ([["a", "nope"]], "'nope' is not a run"),
    ([["a", "a"]], "compares a run with itself"),
    ([["a"]], "contrasts"),
])
def test_bad_contrasts_are_refused_naming_the_run(contrasts, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_comparison({"runs": [{"name": "a", "recipe": "x"}, {"name": "b", "recipe": "y"}],
                          "contrasts": contrasts})


def test_a_contrast_may_name_a_born_again_generation():
    comparison = parse_comparison({"runs": [{"name": "ba", "recipe": "x"}, {"name": "b", "recipe": "y"}],
                                   "contrasts": [["ba gen 2", "b"]]})
    assert comparison.contrasts == [("ba gen 2", "b")]


def test_the_paired_figure_is_drawn_when_a_contrast_has_a_spread_and_not_otherwise(tmp_path):
    from PIL import Image

    from kdkit.report.seeds import plot_paired

    board = leaderboard(RESULTS, baseline="ce", contrasts=[("beta", "ls")])
    path = plot_paired(board["paired"], tmp_path / "paired.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[1] > 100
    one = leaderboard({name: items[:1] for name, items in RESULTS.items()}, contrasts=[("beta", "ls")])
    assert plot_paired(one["paired"], tmp_path / "none.png") is None  # one seed, no per-example scores
    assert not (tmp_path / "none.png").exists()
