"""The picture a dataset-distillation comparison adds to its leaderboard: test accuracy against the number of
distilled samples, one line per kind of set (labels, initialisation), beside the random real subsets of the same
sizes and the full-data model."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def samples_figure(board: dict, path: Path) -> Path | None:
    """``accuracy vs distilled samples`` of the comparison's runs (mean ± sample std over seeds, in %); None when
    the runs have fewer than two sizes to draw a line through."""
    series: dict[str, dict[int, list[float]]] = {}
    subsets: dict[int, dict[str, float]] = {}  # one value per size and seed, however many runs share them
    full: dict[str, float] = {}
    for row in board["rows"]:
        if row["role"] != "student" or row.get("variant"):
            continue
        for folder in row["dirs"]:
            report = json.loads((Path(folder) / "report.json").read_text())
            distilled = report["distilled"]
            size = distilled["samples"]
            kind = f"distilled, {distilled['labels']} labels ({distilled['init']} init)"
            series.setdefault(kind, {}).setdefault(size, []).append(report["student"]["metrics"]["accuracy"])
            seed = Path(folder).name
            subsets.setdefault(size, {})[seed] = report["variants"]["random real subset"]["metrics"]["accuracy"]
            full[seed] = report["teacher"]["metrics"]["accuracy"]
    if len(subsets) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdkit.engine.loops import finish_plot

    fig, ax = plt.subplots(figsize=(7, 4.2))
    subset_points = {size: list(by_seed.values()) for size, by_seed in subsets.items()}
    for label, points in [*series.items(), ("random real subset", subset_points)]:
        sizes = sorted(points)
        stats = [_mean_std(points[size]) for size in sizes]
        ax.errorbar(sizes, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                    label=label, linestyle="--" if label == "random real subset" else "-")
    ax.axhline(100 * statistics.fmean(full.values()), color="black", linestyle=":", label="all real training data")
    ax.set_xscale("log")
    ax.set_xticks(sorted(subsets), [str(size) for size in sorted(subsets)])
    ax.minorticks_off()  # a log axis over a narrow range would label its minor ticks "6×10⁰"
    return finish_plot(fig, ax, path, "training samples", "test accuracy (%)")


def validation_figure(checks: list[dict], chosen: dict, path: Path) -> Path:
    """``training.keep: best``'s picture: validation accuracy of each check against the outer iteration, the kept
    set marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdkit.engine.loops import finish_plot

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([c["iteration"] for c in checks], [100 * c["accuracy"] for c in checks], linewidth=1,
            label="validation check")
    ax.scatter([chosen["iteration"]], [100 * chosen["accuracy"]], color="tab:red", zorder=3,
               label=f"kept: iteration {chosen['iteration']:,} ({100 * chosen['accuracy']:.1f}%)")
    ax.scatter([checks[-1]["iteration"]], [100 * checks[-1]["accuracy"]], color="black", marker="x", zorder=3,
               label=f"last: {100 * checks[-1]['accuracy']:.1f}%")
    return finish_plot(fig, ax, path, "outer iteration", "validation accuracy (%)")
