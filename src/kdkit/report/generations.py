"""The report of a born-again run (``generations`` in a recipe): one row per generation.

``results`` is the dict :func:`kdkit.api.distill_generations` builds::

    {"generations": [row, ...], "primary_metric": str, "student": the last generation's entry, "teacher": the
     recipe's teacher entry (absent without one), "alpha": float, "temperature": float, ...other scalars}
    row = {"generation": g, "status": "trained" | "resumed" | "reused", "dir": str, "teacher_source": str | None,
           "params": int, "metrics": {name: fraction, ...},
           "gain": primary metric − generation 0's primary metric, "latency": {...}}

A row written before metric dicts existed has ``accuracy`` and ``ece`` instead of ``metrics``; it is read as
``{"accuracy": ..., "ece": ...}`` (see :mod:`kdkit.report.results`). Zhang & Sabuncu (2020) report that the score
rises over the generations and that calibration changes with it, so the table shows every metric of the rows, and
the gain is measured in the primary metric against generation 0 (the plain-CE student in the paper).
"""

from __future__ import annotations

import json
from pathlib import Path

from kdkit.report.results import (markdown_table, metric_header, metric_names, metric_notes, metrics_of, primary_of,
                                  show_metric)


def render_markdown(results: dict) -> str:
    """One row per generation: its teacher, params (M), every metric in % (the primary first; a column for a
    metric such as ECE only when some row has it), the gain over generation 0 in points of the primary metric."""
    primary = primary_of(results)
    names = metric_names(primary, results["generations"])
    header = (["generation", "teacher", "params (M)"] + [metric_header(name) for name in names]
              + [f"gain over gen 0 ({primary}, points)", "status"])
    rows = []
    for row in results["generations"]:
        # a later generation's teacher is the previous one's student: say so rather than print its folder
        teacher = f"generation {row['generation'] - 1}" if row["generation"] else row.get("teacher_source") or "—"
        metrics = metrics_of(row)
        rows.append([str(row["generation"]), teacher, f"{row['params'] / 1e6:.2f}"]
                    + [show_metric(name, metrics.get(name)) for name in names]
                    + [f"{100 * row['gain']:+.2f}", row["status"]])
    lines = markdown_table(header, rows)
    method = (f"Generation g ≥ 1: (1 − α)·CE + α·soft-CE(σ(z_(g−1)/T)), α = {results['alpha']:g}, "
              f"T = {results['temperature']:g} on the teacher only; its teacher is generation g − 1's student. "
              f"Primary metric: {primary} (higher is better). Split: {results.get('split', '?')}.")
    lines += ["", method, *metric_notes(names)]
    return "\n".join(lines) + "\n"


def write_report(path_dir: str | Path, results: dict) -> tuple[Path, Path]:
    """Write ``report.md`` (the generations table) and ``report.json`` (``results``) into ``path_dir``."""
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / "report.md", out / "report.json"
    md_path.write_text(render_markdown(results))
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return md_path, json_path
