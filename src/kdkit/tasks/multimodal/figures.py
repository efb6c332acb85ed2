"""The picture a multimodal comparison adds to its leaderboard: each run's test accuracy on the full input and on
each single-modality view (mean ± sample std over seeds), the teacher's beside them, and the MSD weight each run's
scheme gave every modality."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def views_figure(board: dict, path: Path) -> Path | None:
    """Grouped bars per run (full input, then each modality alone), the teacher's as the first group; a second
    panel with the mean MSD weight per modality of the runs that have one. None without student runs."""
    runs: dict[str, list[dict]] = {}
    teacher: dict | None = None
    for row in board["rows"]:
        if row["role"] != "student" or row.get("variant"):
            continue
        runs[row["run"]] = [json.loads((Path(folder) / "report.json").read_text()) for folder in row["dirs"]]
        if teacher is None and runs[row["run"]][0].get("teacher"):
            teacher = runs[row["run"]][0]["teacher"]["metrics"]
    if not runs:
        return None
    modalities = [k.removesuffix("_only_accuracy") for k in next(iter(runs.values()))[0]["student"]["metrics"]
                  if k.endswith("_only_accuracy")]
    keys = ["accuracy"] + [f"{m}_only_accuracy" for m in modalities]
    labels = ["full input"] + [f"{m} only" for m in modalities]
    groups = ([("teacher", [[teacher[k]] for k in keys])] if teacher else []) + [
        (name, [[r["student"]["metrics"][k] for r in reports] for k in keys]) for name, reports in runs.items()]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdkit.engine.loops import save_figure

    weighted = {name: [_mean_std([r["msd_weights"][m] for r in reports])[0] for m in modalities]
                for name, reports in runs.items() if all("msd_weights" in r for r in reports)}
    fig, axes = plt.subplots(1, 2 if weighted else 1, figsize=(12 if weighted else 8, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]} if weighted else None)
    ax = axes[0][0]
    width = 0.8 / len(keys)
    for j, label in enumerate(labels):
        stats = [_mean_std(values[j]) for _, values in groups]
        ax.bar([i + j * width for i in range(len(groups))], [100 * m for m, _ in stats], width,
               yerr=[100 * s for _, s in stats], capsize=2, label=label)
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(groups))], [g for g, _ in groups],
                  rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    if weighted:
        ax = axes[0][1]
        bottom = [0.0] * len(weighted)
        for k, m in enumerate(modalities):
            values = [w[k] for w in weighted.values()]
            ax.bar(range(len(weighted)), values, bottom=bottom, label=m, color=f"C{k + 1}")  # as its view's bars
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(range(len(weighted)), list(weighted), rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("mean MSD weight on the test split")
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # not over the bars
    save_figure(fig, path)
    return path
