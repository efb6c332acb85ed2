"""Per-seed values and differences paired by seed, for comparisons with several seeds.

Two runs of one comparison trained with the same seed share the head's initialisation and the data order, so the
seed moves both alike; their difference *paired by seed*, d_s = m_a(s) − m_b(s) averaged over the seeds both runs
have, with standard error sd(d)/√n, is far tighter than the unpaired √(s_a²/n + s_b²/n) whenever the seeds differ
more than the methods do. :func:`per_seed` lists every run's metrics seed by seed; :func:`paired_differences` gives
the paired difference of each contrast (a comparison's ``contrasts``, and every run against its ``baseline``) on
the primary metric and on every other metric both runs report, with, where both runs kept per-example scores
(``per_query.json``), the 95% paired bootstrap interval over those examples, pooled over the shared seeds.
"""

from __future__ import annotations

import math
import statistics

from kdkit.errors import DataError
from kdkit.report.bootstrap import paired_bootstrap, per_example
from kdkit.report.results import markdown_table, metric_header, metric_names, metric_scale, metrics_of, show_metric


def _students(results: dict[str, list[dict]]) -> dict[str, dict[int, dict[str, float]]]:
    """``{run: {seed: the student's metrics}}``."""
    return {name: {item["seed"]: metrics_of(item["report"]["student"]) for item in items}
            for name, items in results.items()}


def per_seed(results: dict[str, list[dict]], primary: str) -> dict:
    """``{"seeds": [...], "metrics": [primary, others...], "rows": [{"run", "values": {metric: {seed: value}}}]}``
    over the student of every run (teachers and references are not seeded), in the order of ``results``."""
    by_run = _students(results)
    seeds = sorted({seed for values in by_run.values() for seed in values})
    names = metric_names(primary, [{"metrics": m} for values in by_run.values() for m in values.values()])
    rows = [{"run": name, "values": {metric: {seed: m[metric] for seed, m in values.items() if metric in m}
                                     for metric in names}} for name, values in by_run.items()]
    return {"seeds": seeds, "metrics": names, "rows": rows}


def paired_interval(dirs_a: dict[int, str], dirs_b: dict[int, str], metric: str,
                    n: int = 10_000, read: dict | None = None) -> list[float] | None:
    """The 95% paired bootstrap interval of run a's score minus run b's over the examples both were evaluated on
    (per seed they share, pooled), from the run folders' ``per_query.json`` (``dirs_*``: seed → folder); None when
    a run has none (made by an older kdkit, or a task that writes none) or the two were scored on different
    examples. ``read`` (optional): a dict shared between calls that keeps each folder's scores once read."""
    read = {} if read is None else read

    def scores(folder: str) -> dict:
        if (folder, metric) not in read:
            read[folder, metric] = per_example(folder, metric)
        return read[folder, metric]

    seeds = [seed for seed in dirs_a if seed in dirs_b]
    if not seeds:
        return None
    a, b = [], []
    try:
        for seed in seeds:
            ours, theirs = scores(dirs_a[seed]), scores(dirs_b[seed])
            if ours.keys() != theirs.keys():
                return None
            a += [ours[key] for key in sorted(ours)]
            b += [theirs[key] for key in sorted(ours)]
    except DataError:
        return None
    result = paired_bootstrap(a, b, n=n, seed=0)
    return [result["ci_low"], result["ci_high"]]


def paired_differences(results: dict[str, list[dict]], pairs: list[tuple[str, str]], primary: str) -> list[dict]:
    """For each ``(a, b)`` of ``pairs`` (both keys of ``results``): ``{"a", "b", "seeds", "differences": {metric:
    {"mean", "se"}}, "ci"}`` — the mean over the seeds both runs have of a's metric minus b's, its standard error
    (None for one seed), for the primary metric first and then every other metric both report on every shared
    seed; ``ci`` is the pooled paired bootstrap interval of the primary metric (:func:`paired_interval`) or None."""
    by_run = _students(results)
    dirs = {name: {item["seed"]: item["dir"] for item in items} for name, items in results.items()}
    out, read = [], {}  # the baseline's per_query.json is in most pairs: read each folder once
    for a, b in pairs:
        seeds = sorted(set(by_run[a]) & set(by_run[b]))
        if not seeds:
            continue
        names = [name for name in metric_names(primary, [{"metrics": by_run[a][seeds[0]]}])
                 if all(name in by_run[a][s] and name in by_run[b][s] for s in seeds)]
        differences = {}
        for name in names:
            values = [by_run[a][s][name] - by_run[b][s][name] for s in seeds]
            differences[name] = {"mean": statistics.fmean(values),
                                 "se": statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None}
        out.append({"a": a, "b": b, "seeds": seeds, "differences": differences,
                    "ci": paired_interval(dirs[a], dirs[b], primary, read=read)})
    return out


def per_seed_cells(table: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per run, one column per metric with its values seed by seed (``a / b / c``)."""
    seeds = " / ".join(str(s) for s in table["seeds"])
    header = ["run"] + [f"{metric_header(m)} seeds {seeds}" for m in table["metrics"]]
    body = [[row["run"]] + [" / ".join(show_metric(m, row["values"][m].get(s)) for s in table["seeds"])
                            for m in table["metrics"]] for row in table["rows"]]
    return header, body


def paired_cells(differences: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per contrast, its seeds, each metric's paired difference ± standard error (points
    for metrics in %, the metric's own units for the others) and the primary metric's bootstrap interval."""
    names = list(dict.fromkeys(name for d in differences for name in d["differences"]))
    primary = names[0]
    header = (["difference (paired by seed)", "seeds"] + [f"Δ {name}" for name in names]
              + [f"95% bootstrap CI, Δ {primary}"])
    body = []
    for d in differences:
        cells = []
        for name in names:
            value = d["differences"].get(name)
            if value is None:
                cells.append("—")
                continue
            scale = metric_scale(name)[0]
            cells.append(f"{scale * value['mean']:+.2f}"
                         + ("" if value["se"] is None else f" ± {scale * value['se']:.2f}"))
        ci, scale = d["ci"], metric_scale(primary)[0]
        body.append([f"{d['a']} − {d['b']}", str(len(d["seeds"])), *cells,
                     "—" if ci is None else f"[{scale * ci[0]:+.2f}, {scale * ci[1]:+.2f}]"])
    return header, body


def render_per_seed(table: dict) -> list[str]:
    """The per-seed table as markdown lines."""
    return markdown_table(*per_seed_cells(table))


def render_paired(differences: list[dict]) -> list[str]:
    """The paired differences as markdown lines."""
    return markdown_table(*paired_cells(differences))


NOTE = ("Per seed: each run's student scored on the evaluation split, seed by seed. Paired by seed: the mean over "
        "the seeds both runs have of (run a − run b), ± its standard error sd/√n, in the units of Δ above; the "
        "bootstrap interval resamples the evaluation examples of all shared seeds together (10,000 resamples, "
        "seed 0), where both runs kept per-example scores.")


def plot_paired(differences: list[dict], path, title: str = "Differences paired by seed"):
    """A forest plot of the primary metric's paired differences (one line per contrast, top to bottom in table
    order): the mean with ±2 standard errors as a bar (the pooled bootstrap interval as a thin bar where there is no
    standard error), a vertical line at 0. Returns ``path`` (PNG), or None when no contrast has a spread to show."""
    shown = [d for d in differences if d["differences"] and (
        next(iter(d["differences"].values()))["se"] is not None or d["ci"] is not None)]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    primary = next(iter(shown[0]["differences"]))
    scale = metric_scale(primary)[0]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * len(shown)))
    for y, d in enumerate(reversed(shown)):
        value = d["differences"][primary]
        mean = scale * value["mean"]
        if value["se"] is not None:
            ax.errorbar(mean, y, xerr=2 * scale * value["se"], fmt="o", color="tab:blue", capsize=3)
        elif d["ci"] is not None:
            ax.errorbar(mean, y, xerr=[[mean - scale * d["ci"][0]], [scale * d["ci"][1] - mean]], fmt="o",
                        color="tab:grey", capsize=3, elinewidth=1)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(shown)), [f"{d['a']} − {d['b']} ({len(d['seeds'])} seeds)" for d in reversed(shown)])
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xlabel(f"Δ {primary}" + (" (points)" if scale != 1.0 else "") + ", mean ± 2 s.e. over seeds")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
