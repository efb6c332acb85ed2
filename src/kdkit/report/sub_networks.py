"""The width × depth grid of a DynaBERT student's sub-networks: a markdown table and a heatmap, and the pick of the
best sub-network within a size or latency budget.

An entry (``results["sub_networks"]``) is a report entry (``params``, ``metrics``, ``latency``) with ``width``,
``depth``, ``heads``, ``neurons``, ``layers`` (blocks kept) and ``dir`` (its exported folder).
"""

from __future__ import annotations

from pathlib import Path

from kdkit.report.results import markdown_table, metric_header, metric_scale, show_metric

FIGURE = "sub_networks.png"


def _axes(entries: list[dict]) -> tuple[list[float], list[float], dict[tuple[float, float], dict]]:
    widths = sorted({e["width"] for e in entries}, reverse=True)
    depths = sorted({e["depth"] for e in entries}, reverse=True)
    return widths, depths, {(e["width"], e["depth"]): e for e in entries}


def render_grid(entries: list[dict], primary: str) -> str:
    """Rows: width multipliers; columns: depth multipliers; each cell the sub-network's primary metric and its
    parameters in millions, and "one class" where it gave every example the same class (collapsed)."""
    widths, depths, at = _axes(entries)
    header = [f"width \\ depth ({metric_header(primary)}, params M)"] + [f"{d:g}" for d in depths]

    def cell(e: dict) -> str:
        return (f"{show_metric(primary, e['metrics'].get(primary))} ({e['params'] / 1e6:.2f}"
                f"{', one class' if e.get('one_class') else ''})")

    body = [[f"{w:g}"] + [cell(at[w, d]) if (w, d) in at else "—" for d in depths] for w in widths]
    return "\n".join(markdown_table(header, body)) + "\n"


def _heatmap(ax, widths: list[float], depths: list[float], cell, title: str, cmap: str = "viridis"):
    """One grid panel: ``cell(w, d)`` gives ``(value or None, label)``."""
    import numpy as np

    values = np.full((len(widths), len(depths)), np.nan)
    labels = {}
    for i, w in enumerate(widths):
        for j, d in enumerate(depths):
            value, labels[i, j] = cell(w, d)
            if value is not None:
                values[i, j] = value
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    middle = np.nanmean(values) if np.isfinite(values).any() else 0.0
    for (i, j), label in labels.items():
        dark = cmap == "viridis" and (np.isnan(values[i, j]) or values[i, j] < middle)
        ax.text(j, i, label, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_yticks(range(len(widths)), [f"{w:g}" for w in widths])
    ax.set_xlabel("depth multiplier")
    ax.set_ylabel("width multiplier")
    ax.set_title(title, fontsize=9)
    return image


def plot_grid(entries: list[dict], primary: str, path: Path, title: str = "") -> Path:
    """The grid as a heatmap of the primary metric, each cell annotated with it and the parameters (M)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths, depths, at = _axes(entries)

    scale = metric_scale(primary)[0]  # the colour bar in the unit the labels show

    def cell(w, d):
        if (w, d) not in at:
            return None, "—"
        value = at[w, d]["metrics"].get(primary)
        return (None if value is None else scale * value), f"{show_metric(primary, value)}\n" \
                                                           f"{at[w, d]['params'] / 1e6:.1f}M"

    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(depths), 1.2 + 0.8 * len(widths)))
    fig.colorbar(_heatmap(ax, widths, depths, cell, title or metric_header(primary)), ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def append_grid(out: Path, entries: list[dict], primary: str, title: str) -> None:
    """Add the grid to the run's ``report.md`` in ``out``: its table and ``sub_networks.png`` (drawn there)."""
    plot_grid(entries, primary, out / FIGURE, title=title)
    with open(out / "report.md", "a") as md:
        md.write(f"\n## Sub-networks (width × depth)\n\n{render_grid(entries, primary)}\n![sub-networks]({FIGURE})\n")


def seed_grids(board: dict) -> dict[str, list[list[dict]]]:
    """Every student run of a comparison (``kdkit compare``'s leaderboard) whose reports hold sub-networks: its
    seeds' grids, the comparison's baseline first (every run is compared with the first), then in the board's
    order."""
    import json

    runs = {}
    for row in board["rows"]:
        if row["role"] != "student" or row.get("variant"):
            continue
        reports = [json.loads((Path(folder) / "report.json").read_text()) for folder in row.get("dirs", [])]
        if reports and all(r.get("sub_networks") for r in reports):
            runs[row["run"]] = [r["sub_networks"] for r in reports]
    baseline = board.get("baseline")
    if baseline in runs:
        runs = {baseline: runs.pop(baseline), **runs}
    return runs


def _seed_cells(board: dict, grids: dict[str, list[list[dict]]], key=None
                ) -> dict[str, dict[tuple[float, float], dict[int, float]]]:
    """``{run: {(width, depth): {seed: key(entry)}}}`` (default: the primary metric) for every run of ``grids``
    (:func:`seed_grids` of ``board``)."""
    primary = board.get("primary_metric", "accuracy")
    key = key or (lambda e: e["metrics"][primary])
    out = {}
    rows = {row["run"]: row for row in board["rows"] if row["role"] == "student" and not row.get("variant")}
    for name, grids in grids.items():
        seeds = rows[name].get("seeds") or list(range(len(grids)))
        cells: dict[tuple[float, float], dict[int, float]] = {}
        for seed, grid in zip(seeds, grids):
            for e in grid:
                cells.setdefault((e["width"], e["depth"]), {})[seed] = key(e)
        out[name] = cells
    return out


def compare_grid_table(board: dict) -> tuple[str, str] | None:
    """``(caption, markdown table)`` of every sub-network of the comparison's runs: per run the mean ± sample std
    over seeds (in the primary metric's unit), and for each run after the first its difference from the first,
    paired by seed: mean ± standard error of the per-seed differences (``s/√n``, over the seeds both runs have);
    "k one-class" where k seeds' sub-network gave every example the same class. None when no run has sub-networks."""
    import statistics

    grids = seed_grids(board)
    if not grids:
        return None
    runs = _seed_cells(board, grids)
    collapsed = _seed_cells(board, grids, key=lambda e: bool(e.get("one_class")))
    primary = board.get("primary_metric", "accuracy")
    scale = metric_scale(primary)[0]
    names = list(runs)
    first = names[0]
    params = {(e["width"], e["depth"]): e["params"] for e in grids[first][0]}
    widths, depths, _ = _axes(grids[first][0])

    def spread(values: list[float], error: bool = False) -> str:
        mean = scale * statistics.fmean(values)
        if len(values) < 2:
            return f"{mean:+.2f}" if error else f"{mean:.2f}"
        std = scale * statistics.stdev(values)
        return f"{mean:+.2f} ± {std / len(values) ** 0.5:.2f}" if error else f"{mean:.2f} ± {std:.2f}"

    header = ["width", "depth", "params M", *[f"{n} (mean ± std)" for n in names],
              *[f"{n} − {first} (± s.e., seeds)" for n in names[1:]]]
    body = []
    for w in widths:
        for d in depths:
            if (w, d) not in params:
                continue
            cells = [f"{w:g}", f"{d:g}", f"{params[w, d] / 1e6:.2f}"]
            for n in names:
                one = sum(collapsed[n].get((w, d), {}).values())
                cells.append(spread(list(runs[n][w, d].values())) + (f" ({one} one-class)" if one else "")
                             if (w, d) in runs[n] else "—")
            for n in names[1:]:
                ours, base = runs[n].get((w, d), {}), runs[first].get((w, d), {})
                shared = [s for s in ours if s in base]
                cells.append(f"{spread([ours[s] - base[s] for s in shared], error=True)} ({len(shared)})"
                             if shared else "—")
            body.append(cells)
    caption = f"DynaBERT sub-networks: each run's {primary} over seeds" + (
        ", and each run's difference from the first paired by seed" if len(names) > 1 else "")
    return caption, "\n".join(markdown_table(header, body)) + "\n"


def compare_grid_figure(board: dict, path: Path) -> Path | None:
    """One heatmap per run of the sub-networks' mean primary metric over seeds (± the sample std), and, after the
    first run, each other run's difference from it in points; None when no run has sub-networks."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _seed_cells(board, seed_grids(board))
    if not runs:
        return None
    primary = board.get("primary_metric", "accuracy")
    stats = {name: {k: (100 * statistics.fmean(v.values()), 100 * statistics.stdev(v.values()) if len(v) > 1 else 0.0,
                        len(v)) for k, v in cells.items()} for name, cells in runs.items()}
    widths = sorted({w for w, _ in next(iter(runs.values()))}, reverse=True)
    depths = sorted({d for _, d in next(iter(runs.values()))}, reverse=True)
    names = list(stats)
    panels = [(name, None) for name in names] + [(name, names[0]) for name in names[1:]]
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * (1.8 + 1.4 * len(depths)),
                                                      1.4 + 0.8 * len(widths)), squeeze=False)
    for ax, (name, base) in zip(axes[0], panels):
        if base is None:
            def cell(w, d, s=stats[name]):
                if (w, d) not in s:
                    return None, "—"
                mean, std, n = s[w, d]
                return mean, f"{mean:.2f}\n± {std:.2f}" if n > 1 else f"{mean:.2f}"
            seeds = max(n for _, _, n in stats[name].values())
            image = _heatmap(ax, widths, depths, cell, f"{name}: {primary} (%), {seeds} seed(s)")
        else:
            def cell(w, d, s=stats[name], b=stats[base]):
                if (w, d) not in s or (w, d) not in b:
                    return None, "—"
                delta = s[w, d][0] - b[w, d][0]
                return delta, f"{delta:+.2f}"
            image = _heatmap(ax, widths, depths, cell, f"{name} − {base} (points)", cmap="RdBu")
            # twice the largest difference: the colours stay light enough for the black labels
            limit = 2 * max([abs(s) for s in image.get_array().compressed()] + [0.5])
            image.set_clim(-limit, limit)
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pick(entries: list[dict], primary: str, *, max_params: float | None = None, max_latency_ms: float | None = None,
         batch_size: str = "1") -> dict | None:
    """The sub-network with the best validation score (``entry["validation"][primary]``) among those within the
    budget (parameters at most ``max_params``, median latency at ``batch_size`` at most ``max_latency_ms``), the
    smaller one on a tie; None when none fits. The evaluation split's score never chooses, so a test split stays
    unseen."""
    def fits(entry: dict) -> bool:
        if max_params is not None and entry["params"] > max_params:
            return False
        if max_latency_ms is not None and 1e3 * entry["latency"][batch_size]["median_s"] > max_latency_ms:
            return False
        return True

    scored = [e for e in entries if fits(e) and e.get("validation", {}).get(primary) is not None]
    return max(scored, key=lambda e: (e["validation"][primary], -e["params"])) if scored else None
