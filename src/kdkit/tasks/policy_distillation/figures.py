"""The picture a policy-distillation comparison adds to its leaderboard: each run's learning curve, the mean
return of its learners' last 10 training episodes against environment steps per learner, mean ± std over seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _curve(folder: str) -> list[tuple[int, float]]:
    """(environment steps per learner, mean over the learners of their recent return) after each round."""
    points = []
    for entry in json.loads((Path(folder) / "metrics.json").read_text()):
        returns = [r for r in entry["returns"] if r is not None]
        if returns:
            points.append((entry["timesteps"][0], statistics.fmean(returns)))
    return points


def curves_figure(board: dict, path: Path) -> Path | None:
    """One line per run (mean over seeds, a band of ± the sample std), on the steps all its seeds reached; None
    when no run has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdkit.engine.loops import finish_plot

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    drawn = 0
    for row in board["rows"]:
        if row["role"] != "student" or row.get("variant"):
            continue
        curves = [dict(_curve(folder)) for folder in row["dirs"]]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        means = [statistics.fmean(c[s] for c in curves) for s in steps]
        spreads = [statistics.stdev([c[s] for c in curves]) if len(curves) > 1 else 0.0 for s in steps]
        ax.plot(steps, means, label=f"{row['run']} ({len(curves)} seeds)")
        ax.fill_between(steps, [m - s for m, s in zip(means, spreads)], [m + s for m, s in zip(means, spreads)],
                        alpha=0.2)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    return finish_plot(fig, ax, path, "environment steps per learner", "mean return, last 10 training episodes")
