"""The width × depth grid of a DynaBERT student's sub-networks: a markdown table and a heatmap, and the pick of the
best sub-network within a size or latency budget.

An entry (``results["sub_networks"]``) is a report entry (``params``, ``metrics``, ``latency``) with ``width``,
``depth``, ``heads``, ``neurons``, ``layers`` (blocks kept) and ``dir`` (its exported folder).
"""

from __future__ import annotations

from pathlib import Path

from kdkit.report.results import metric_header, show_metric

FIGURE = "sub_networks.png"


def _axes(entries: list[dict]) -> tuple[list[float], list[float], dict[tuple[float, float], dict]]:
    widths = sorted({e["width"] for e in entries}, reverse=True)
    depths = sorted({e["depth"] for e in entries}, reverse=True)
    return widths, depths, {(e["width"], e["depth"]): e for e in entries}


def render_grid(entries: list[dict], primary: str) -> str:
    """Rows: width multipliers; columns: depth multipliers; each cell the sub-network's primary metric and its
    parameters in millions."""
    widths, depths, at = _axes(entries)
    header = [f"width \\ depth ({metric_header(primary)}, params M)"] + [f"{d:g}" for d in depths]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for w in widths:
        cells = [f"{w:g}"] + [f"{show_metric(primary, at[w, d]['metrics'].get(primary))} "
                              f"({at[w, d]['params'] / 1e6:.2f})" if (w, d) in at else "—" for d in depths]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_grid(entries: list[dict], primary: str, path: Path, title: str = "") -> Path:
    """The grid as a heatmap of the primary metric, each cell annotated with it and the parameters (M)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    widths, depths, at = _axes(entries)
    values = np.full((len(widths), len(depths)), np.nan)
    for i, w in enumerate(widths):
        for j, d in enumerate(depths):
            if (w, d) in at and at[w, d]["metrics"].get(primary) is not None:
                values[i, j] = at[w, d]["metrics"][primary]
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(depths), 1.2 + 0.8 * len(widths)))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for i, w in enumerate(widths):
        for j, d in enumerate(depths):
            if (w, d) in at:
                ax.text(j, i, f"{show_metric(primary, at[w, d]['metrics'].get(primary))}\n"
                              f"{at[w, d]['params'] / 1e6:.1f}M", ha="center", va="center", fontsize=8,
                        color="white" if np.isnan(values[i, j]) or values[i, j] < np.nanmean(values) else "black")
    ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_yticks(range(len(widths)), [f"{w:g}" for w in widths])
    ax.set_xlabel("depth multiplier")
    ax.set_ylabel("width multiplier")
    ax.set_title(title or metric_header(primary), fontsize=9)
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
