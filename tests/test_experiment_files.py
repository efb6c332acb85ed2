"""The shipped experiment files stay loadable: every comparison in experiments/ parses and every run's recipe
(with the comparison's and the run's overrides) validates, and every plain recipe there validates, so a renamed
option or a removed loss shows up in the tests, not hours into `kdkit compare`."""

from pathlib import Path

import pytest

from kdkit.report.leaderboard import is_comparison_file, load_comparison, load_recipe

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def test_there_are_experiment_files():
    assert len(EXPERIMENTS) > 10


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_file_validates(path):
    if not is_comparison_file(path):
        assert load_recipe(str(path), []).name
        return
    comparison = load_comparison(path)
    runs = list(comparison.expanded_runs())
    assert runs, f"{path.name}: no runs"
    for run in runs:
        recipe = load_recipe(run.recipe, [*comparison.set, *run.set, "training.seed=0"])
        assert recipe.name
