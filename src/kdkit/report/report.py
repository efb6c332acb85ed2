"""The teacher-versus-student report: a markdown table for people and a JSON file with every number.

``results`` is the dict the evaluation builds::

    {"teacher": entry, "student": entry, "dm_alpha": 0.5, ...any other scalars (split, recipe, torch_threads)}
    entry = {"name": str, "params": int, "accuracy": fraction, "n": int,
             "latency": {"<batch size>": {"median_s": float, "p90_s": float}, ...},
             "ece": fraction (optional: the table shows an ECE column when both entries have it)}

The derived numbers (speedup per batch size, student/teacher accuracy and size ratios, distillation metric) are
computed here by :func:`compare`, so the markdown and the JSON never disagree. A teacher-free run has no
``teacher`` entry: the report is then the student's row alone, without ratios.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdkit.report.metric import distillation_metric


def compare(results: dict) -> dict:
    """Student relative to teacher: ``speedup`` {batch size: teacher median / student median},
    ``accuracy_ratio``, ``param_ratio`` and ``distillation_metric`` (params as size, alpha ``dm_alpha``)."""
    teacher, student = results["teacher"], results["student"]
    latency_t, latency_s = teacher.get("latency", {}), student.get("latency", {})
    return {
        "speedup": {size: latency_t[size]["median_s"] / latency_s[size]["median_s"]
                    for size in _batch_sizes(results)},
        "accuracy_ratio": student["accuracy"] / teacher["accuracy"],
        "param_ratio": student["params"] / teacher["params"],
        "distillation_metric": distillation_metric(student["params"], teacher["params"], student["accuracy"],
                                                   teacher["accuracy"], results.get("dm_alpha", 0.5)),
    }


def _roles(results: dict) -> tuple[str, ...]:
    return ("teacher", "student") if results.get("teacher") is not None else ("student",)


def _batch_sizes(results: dict) -> list[str]:
    """Batch sizes timed for every model of the report, in increasing order."""
    common = set.intersection(*(set(results[role].get("latency", {})) for role in _roles(results)))
    return sorted(common, key=int)


def render_markdown(results: dict) -> str:
    """A table with one row per model: params (M), accuracy (%), ECE (%) when both models have it, median
    latency (ms) per batch size, speedup, accuracy ratio and DM for the student; then the other scalar fields of
    ``results``. Without a teacher: the student's row alone, without speedup, accuracy ratio and DM."""
    roles = _roles(results)
    paired = len(roles) == 2
    derived = compare(results) if paired else {}
    sizes = _batch_sizes(results)
    alpha = results.get("dm_alpha", 0.5)
    ece = all("ece" in results[role] for role in roles)
    header = (["model", "params (M)", "accuracy (%)"] + (["ECE (%)"] if ece else [])
              + [f"latency b{b} (ms)" for b in sizes]
              + ([f"speedup b{b}" for b in sizes] + ["accuracy ratio", f"DM (α={alpha:g})"] if paired else []))
    rows = []
    for role in roles:
        entry = results[role]
        is_student = role == "student"
        rows.append([f"{role}: {entry.get('name', role)}", f"{entry['params'] / 1e6:.2f}",
                     f"{100 * entry['accuracy']:.2f}"] + ([f"{100 * entry['ece']:.2f}"] if ece else [])
                    + [f"{1e3 * entry['latency'][b]['median_s']:.2f}" for b in sizes]
                    + ([f"{derived['speedup'][b] if is_student else 1:.2f}x" for b in sizes]
                       + [f"{100 * derived['accuracy_ratio'] if is_student else 100:.1f}%",
                          f"{derived['distillation_metric']:.3f}" if is_student else "—"] if paired else []))
    lines = ["| " + " | ".join(row) + " |" for row in [header, ["---"] * len(header), *rows]]
    lines += [""] + (["DM = α·params_s/params_t + (1−α)·(1 − acc_s/acc_t) (Alkhulaifi et al., 2021); lower is "
                      "better. Latency: median wall-clock time of one forward pass."] if paired else
                     ["No teacher: the run trained the student alone. Latency: median wall-clock time of one "
                      "forward pass."])
    if ece:
        lines += ["ECE: expected calibration error, Σ |B|/n·|acc(B) − conf(B)| over 15 equal-width confidence "
                  "bins; lower is better."]
    others = {k: v for k, v in results.items() if k not in ("teacher", "student", "comparison", "dm_alpha")
              and isinstance(v, (str, int, float, bool))}
    if others:
        lines += [""] + [f"- {key}: {value}" for key, value in others.items()]
    return "\n".join(lines) + "\n"


def write_report(path_dir: str | Path, results: dict) -> tuple[Path, Path]:
    """Write ``report.md`` (the table) and ``report.json`` (``results`` plus ``comparison``, which a report
    without a teacher does not have) into ``path_dir``."""
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / "report.md", out / "report.json"
    md_path.write_text(render_markdown(results))
    derived = {"comparison": compare(results)} if len(_roles(results)) == 2 else {}
    json_path.write_text(json.dumps({**results, **derived}, indent=2, default=str) + "\n")
    return md_path, json_path
