"""The report of a born-again run (``generations`` in a recipe): one row per generation.

``results`` is the dict :func:`kdkit.api.distill_generations` builds::

    {"generations": [row, ...], "student": the last generation's entry, "teacher": the recipe's teacher entry
     (absent without one), "alpha": float, "temperature": float, ...other scalars}
    row = {"generation": g, "status": "trained" | "resumed" | "reused", "dir": str, "teacher_source": str | None,
           "params": int, "accuracy": fraction, "ece": fraction, "gain": accuracy − generation 0's accuracy,
           "latency": {...}}

Zhang & Sabuncu (2020) report that accuracy rises over the generations and that calibration changes with it, so
the table shows both, and the gain is measured against generation 0 (the plain-CE student in the paper).
"""

from __future__ import annotations

import json
from pathlib import Path


def render_markdown(results: dict) -> str:
    header = ["generation", "teacher", "params (M)", "accuracy (%)", "ECE (%)", "gain over gen 0 (points)", "status"]
    rows = []
    for row in results["generations"]:
        # a later generation's teacher is the previous one's student: say so rather than print its folder
        teacher = f"generation {row['generation'] - 1}" if row["generation"] else row.get("teacher_source") or "—"
        rows.append([str(row["generation"]), teacher, f"{row['params'] / 1e6:.2f}", f"{100 * row['accuracy']:.2f}",
                     "—" if row.get("ece") is None else f"{100 * row['ece']:.2f}", f"{100 * row['gain']:+.2f}",
                     row["status"]])
    lines = ["| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *rows]]
    lines += ["", f"Generation g ≥ 1: (1 − α)·CE + α·soft-CE(σ(z_(g−1)/T)), α = {results['alpha']:g}, "
                  f"T = {results['temperature']:g} on the teacher only; its teacher is generation g − 1's student. "
                  f"ECE: expected calibration error over 15 equal-width confidence bins; lower is better. "
                  f"Split: {results.get('split', '?')}."]
    return "\n".join(lines) + "\n"


def write_report(path_dir: str | Path, results: dict) -> tuple[Path, Path]:
    """Write ``report.md`` (the generations table) and ``report.json`` (``results``) into ``path_dir``."""
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / "report.md", out / "report.json"
    md_path.write_text(render_markdown(results))
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return md_path, json_path
