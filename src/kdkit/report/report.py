"""The teacher-versus-student report: a markdown table for people and a JSON file with every number.

``results`` is the dict a task's evaluation builds (the format is described in :mod:`kdkit.report.results`)::

    {"task": str, "primary_metric": str, "split": str, "dm_alpha": 0.5, "teacher": entry, "student": entry, ...}
    entry = {"name": str, "params": int, "n": int, "metrics": {name: fraction, ...},
             "latency": {"<batch size>": {"median_s": float, "p90_s": float}, ...}, "index_mb": float (optional)}

``index_mb`` (retrieval: what the model's index of the corpus takes) adds a column; ``latency_unit`` in
``results`` says what one timed call is (default "one forward pass"); ``references`` (name → entry) are untrained
systems measured beside (BM25, the student's model before training), shown as rows without ratios; ``variants``
(name → entry) are other forms of the trained student (``before training``, ``int8``), shown as student rows with
their own ratios. ``size_mb`` (the state dict on disk) adds a column.

The derived numbers (speedup per batch size, student/teacher ratios of the primary metric and of the sizes,
distillation metric) are computed here by :func:`compare`, so the markdown and the JSON never disagree. A
teacher-free run has no ``teacher`` entry: the report is then the student's row alone, without ratios.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdkit.report.metric import distillation_metric
from kdkit.report.results import (PLAIN, markdown_table, metric_header, metric_names, metric_notes, metrics_of,
                                  primary_of, show_metric)


def compare(results: dict) -> dict:
    """Student relative to teacher: ``speedup`` {batch size: teacher median / student median}, ``score_ratio``
    (student / teacher primary metric), ``param_ratio`` and ``distillation_metric`` (params as size, the primary
    metric as score, alpha ``dm_alpha``). A teacher scoring 0 (an untrained one) has no ratio or DM: None."""
    teacher, student = results["teacher"], results["student"]
    primary = primary_of(results)
    score_t, score_s = metrics_of(teacher)[primary], metrics_of(student)[primary]
    latency_t, latency_s = teacher.get("latency", {}), student.get("latency", {})
    return {
        "speedup": {size: latency_t[size]["median_s"] / latency_s[size]["median_s"]
                    for size in _batch_sizes(results)},
        "score_ratio": score_s / score_t if score_t else None,
        "param_ratio": student["params"] / teacher["params"],
        "distillation_metric": distillation_metric(student["params"], teacher["params"], score_s, score_t,
                                                   results.get("dm_alpha", 0.5)) if score_t else None,
    }


def _roles(results: dict) -> tuple[str, ...]:
    return ("teacher", "student") if results.get("teacher") is not None else ("student",)


def _batch_sizes(results: dict) -> list[str]:
    """Batch sizes timed for every model of the report, in increasing order."""
    common = set.intersection(*(set(results[role].get("latency", {})) for role in _roles(results)))
    return sorted(common, key=int)


def render_markdown(results: dict) -> str:
    """A table with one row per model: params (M), every metric in % (the primary first; a dash where a model
    lacks one), median latency (ms) per batch size, then speedup, primary-metric ratio and DM for the student;
    then notes and the other scalar fields of ``results``. Without a teacher: the student's row alone, without
    speedup, ratio and DM."""
    roles = _roles(results)
    paired = len(roles) == 2
    derived = compare(results) if paired else {}
    sizes = _batch_sizes(results)
    alpha = results.get("dm_alpha", 0.5)
    primary = primary_of(results)
    names = metric_names(primary, [results[role] for role in roles])
    variants = results.get("variants") or {}  # the student before training, its int8 copy
    models = [results[role] for role in roles] + list(variants.values())
    indexed = any("index_mb" in entry for entry in models)  # retrieval: what serving the corpus takes
    sized = any("size_mb" in entry for entry in models)  # on disk: beside an int8 copy
    header = (["model", "params (M)"] + [metric_header(name) for name in names]
              + (["size (MB)"] if sized else [])
              + (["index (MB)"] if indexed else []) + [f"latency b{b} (ms)" for b in sizes]
              + ([f"speedup b{b}" for b in sizes] + [f"{primary} ratio", f"DM (α={alpha:g})"] if paired else []))
    rows = []
    students = [(f"{role}: {results[role].get('name', role)}", role, results[role], derived) for role in roles] + [
        (f"student, {name}", "variant", entry, compare({**results, "student": entry}) if paired else {})
        for name, entry in variants.items()]
    for label, role, entry, ours in students:
        metrics = metrics_of(entry)
        is_student = role != "teacher"
        rows.append([label, f"{entry['params'] / 1e6:.2f}"]
                    + [show_metric(name, metrics.get(name)) for name in names]
                    + ([_megabytes(entry.get("size_mb"))] if sized else [])
                    + ([_megabytes(entry.get("index_mb"))] if indexed else [])
                    + [f"{1e3 * entry['latency'][b]['median_s']:.2f}" for b in sizes]
                    + ([f"{ours['speedup'][b] if is_student else 1:.2f}x" for b in sizes]
                       + [_ratio(ours["score_ratio"]) if is_student else "100.0%",
                          _dm(ours["distillation_metric"]) if is_student else "—"] if paired else []))
    for name, entry in (results.get("references") or {}).items():  # untrained systems measured beside
        metrics = metrics_of(entry)
        rows.append([f"reference: {name}", f"{entry['params'] / 1e6:.2f}"]
                    + [show_metric(metric, metrics.get(metric)) for metric in names]
                    + ([_megabytes(entry.get("size_mb"))] if sized else [])
                    + ([_megabytes(entry.get("index_mb"))] if indexed else [])
                    + [f"{1e3 * entry['latency'][b]['median_s']:.2f}" if b in entry.get("latency", {}) else "—"
                       for b in sizes] + (["—"] * (len(sizes) + 2) if paired else []))
    lines = markdown_table(header, rows)
    plain = [name for name in names if name in PLAIN]
    lines += ["", f"Primary metric: {primary} (higher is better); metrics in %"
              + (f" except {', '.join(plain)}." if plain else ".")]
    latency = f"Latency: median wall-clock time of {results.get('latency_unit', 'one forward pass')}."
    dm = (f"DM = α·params_s/params_t + (1−α)·(1 − {primary}_s/{primary}_t) (Alkhulaifi et al., 2021); lower is "
          "better.")
    lines += [f"{dm} {latency}" if paired else f"No teacher: the run trained the student alone. {latency}"]
    lines += metric_notes(names)
    speeds = [f"{role} " + ", ".join(f"{float(v):.1f} (b{b})" for b, v in sorted(results[role]["tokens_per_s"].items(),
                                                                            key=lambda kv: int(kv[0])))
              for role in roles if results[role].get("tokens_per_s")]
    if speeds:
        lines += [f"Generated tokens per second: {'; '.join(speeds)}."]
    others = {k: v for k, v in results.items()
              if k not in ("teacher", "student", "comparison", "dm_alpha", "primary_metric", "latency_unit")
              and isinstance(v, (str, int, float, bool))}
    # flat mappings of numbers (the multimodal task's saliency and MSD weights per modality), one line each
    others |= {k: ", ".join(f"{name} {value:.3g}" for name, value in v.items()) for k, v in results.items()
               if isinstance(v, dict) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                   for x in v.values()) and k not in ("teacher", "student")}
    if others:
        lines += [""] + [f"- {key}: {value}" for key, value in others.items()]
    if results.get("samples"):
        lines += ["", *render_samples(results["samples"])]
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int) -> str:
    """A text as one markdown table cell: one line, pipes escaped, long texts keep their start and end."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else f"{text[:limit * 2 // 3]} … {text[-(limit // 3):]}"


def render_samples(samples: list[dict], limit: int = 160) -> list[str]:
    """Sample outputs side by side: the prompt (cut), the reference and each model's output."""
    roles = [key for key in samples[0] if key not in ("prompt", "reference")]
    header = ["prompt", "reference", *roles]
    rows = [[_cell(sample.get(key, ""), limit if key == "prompt" else 2 * limit) for key in header]
            for sample in samples]
    return ["Samples:", "", *markdown_table(header, rows)]


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _dm(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _megabytes(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


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
