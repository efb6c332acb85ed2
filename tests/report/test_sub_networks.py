"""The DynaBERT grid: its table, its pick within a budget and the comparison's heatmaps (kdkit.report.sub_networks)."""

import json

import pytest

from kdkit.report.sub_networks import compare_grid_figure, compare_grid_table, pick, render_grid, seed_grids


def _entry(width, depth, accuracy, validation, params, latency_s=0.01):
    return {"width": width, "depth": depth, "params": params, "metrics": {"accuracy": accuracy},
            "validation": {"accuracy": validation}, "latency": {"1": {"median_s": latency_s}}}


GRID = [_entry(1.0, 1.0, 0.80, 0.81, 1_000_000, 0.020), _entry(0.5, 1.0, 0.78, 0.70, 600_000, 0.012),
        _entry(1.0, 0.5, 0.60, 0.79, 550_000, 0.011), _entry(0.5, 0.5, 0.75, 0.79, 300_000, 0.006)]


def test_grid_table_rows_are_widths_and_columns_depths():
    lines = render_grid(GRID, "accuracy").splitlines()
    assert lines[0] == "| width \\ depth (accuracy (%), params M) | 1 | 0.5 |"
    assert lines[2] == "| 1 | 80.00 (1.00) | 60.00 (0.55) |"
    assert lines[3] == "| 0.5 | 78.00 (0.60) | 75.00 (0.30) |"


def test_pick_chooses_on_validation_within_the_budget_the_smaller_on_a_tie():
    assert pick(GRID, "accuracy")["params"] == 1_000_000
    # within 600k: test accuracy would choose width 0.5 × depth 1 (78%); validation prefers the 0.79s, smaller wins
    assert pick(GRID, "accuracy", max_params=600_000)["params"] == 300_000
    assert pick(GRID, "accuracy", max_latency_ms=11.5)["params"] == 300_000
    assert pick(GRID, "accuracy", max_params=700_000, max_latency_ms=12.5)["params"] == 300_000
    assert pick(GRID, "accuracy", max_params=100) is None


def test_compare_figure_averages_seeds_and_skips_runs_without_grids(tmp_path):
    rows = []
    for run, shift in (("kd", 0.0), ("ckd", 0.02)):
        dirs = []
        for seed in (0, 1):
            folder = tmp_path / run / f"seed-{seed}"
            folder.mkdir(parents=True)
            grid = [{**e, "metrics": {"accuracy": e["metrics"]["accuracy"] + shift + 0.01 * seed}} for e in GRID]
            (folder / "report.json").write_text(json.dumps({"sub_networks": grid}))
            dirs.append(str(folder))
        rows.append({"role": "student", "run": run, "dirs": dirs})
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "report.json").write_text(json.dumps({"student": {}}))
    rows.append({"role": "student", "run": "plain", "dirs": [str(plain)]})
    board = {"primary_metric": "accuracy", "rows": rows}
    grids = seed_grids(board)
    assert list(grids) == ["kd", "ckd"] and len(grids["ckd"]) == 2
    assert list(seed_grids({**board, "baseline": "ckd"})) == ["ckd", "kd"]  # the baseline first, whatever its rank
    assert grids["ckd"][1][0]["metrics"]["accuracy"] == pytest.approx(0.83)
    path = compare_grid_figure(board, tmp_path / "grid.png")
    assert path.stat().st_size > 0
    assert compare_grid_figure({"rows": rows[2:]}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_compare_table_gives_each_run_over_seeds_and_the_difference_paired_by_seed(tmp_path):
    rows = []
    # kd: seeds 0, 1, 2; ckd: seeds 0 and 2 only, +3, +1 points on the 1 × 1 cell; width 0.5 × depth 0.5 missing
    for run, seeds, shifts in (("kd", (0, 1, 2), (0.0, 0.02, 0.04)), ("ckd", (0, 2), (0.03, 0.05))):
        dirs = []
        for seed, shift in zip(seeds, shifts):
            folder = tmp_path / run / f"seed-{seed}"
            folder.mkdir(parents=True)
            grid = [{**e, "metrics": {"accuracy": e["metrics"]["accuracy"] + shift}} for e in GRID
                    if run == "kd" or (e["width"], e["depth"]) != (0.5, 0.5)]
            (folder / "report.json").write_text(json.dumps({"sub_networks": grid}))
            dirs.append(str(folder))
        rows.append({"role": "student", "run": run, "dirs": dirs, "seeds": list(seeds)})
    caption, table = compare_grid_table({"primary_metric": "accuracy", "rows": rows})
    assert caption == ("DynaBERT sub-networks: each run's accuracy over seeds, and each run's difference from the "
                       "first paired by seed")
    lines = table.splitlines()
    assert lines[0] == "| width | depth | params M | kd (mean ± std) | ckd (mean ± std) | ckd − kd (± s.e., seeds) |"
    # kd 80, 82, 84 → 82.00 ± 2.00; ckd 83, 85 → 84.00 ± 1.41; paired differences +3 (seed 0), +1 (seed 2):
    # mean +2.00, std 1.414, s.e. 1.00 over 2 seeds (not 84 − 82 against unpaired spreads)
    assert lines[2] == "| 1 | 1 | 1.00 | 82.00 ± 2.00 | 84.00 ± 1.41 | +2.00 ± 1.00 (2) |"
    assert lines[5] == "| 0.5 | 0.5 | 0.30 | 77.00 ± 2.00 | — | — |"
    assert compare_grid_table({"primary_metric": "accuracy", "rows": rows[:1]})[0] == (
        "DynaBERT sub-networks: each run's accuracy over seeds")  # no difference to name with one run
    assert compare_grid_table({"rows": rows[:0]}) is None


def test_collapsed_sub_networks_are_marked_in_both_tables(tmp_path):
    grid = [{**e, "one_class": True} if (e["width"], e["depth"]) == (1.0, 0.5) else e for e in GRID]
    assert render_grid(grid, "accuracy").splitlines()[2] == "| 1 | 80.00 (1.00) | 60.00 (0.55, one class) |"
    rows = []
    for run in ("kd", "ckd"):
        folder = tmp_path / run / "seed-0"
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps({"sub_networks": grid if run == "kd" else GRID}))
        rows.append({"role": "student", "run": run, "dirs": [str(folder)], "seeds": [0]})
    lines = compare_grid_table({"primary_metric": "accuracy", "rows": rows})[1].splitlines()
    assert lines[3] == "| 1 | 0.5 | 0.55 | 60.00 (1 one-class) | 60.00 | +0.00 (1) |"
