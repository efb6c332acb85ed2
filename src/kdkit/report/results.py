"""The evaluation results every report reads, and the two helpers every reader goes through.

A task's evaluation produces::

    results = {"task": "classification", "primary_metric": "accuracy", "split": "test", "dm_alpha": 0.5,
               "teacher": entry (absent for a teacher-free run), "student": entry, ...other scalar fields}
    entry = {"name": str, "params": int, "n": int,
             "metrics": {"accuracy": 0.8282, "ece": 0.041, ...},
             "latency": {"<batch size>": {"median_s": float, "p90_s": float}, ...}, "cached": bool (optional)}

Every metric is a fraction in [0, 1], shown as a percentage with two decimals, except those in :data:`PLAIN`
(perplexity, an episode return), shown as they are. The primary metric is higher-is-better: it ranks runs, and the
distillation metric and score ratio are computed from it. The other metrics claim no direction, except the few in
:data:`LOWER_IS_BETTER`, which only changes their column header and notes.

Runs finished by earlier kdkit versions hold entries with top-level ``accuracy`` (and ``ece``) and no
``primary_metric``; ``kdkit compare`` reuses such runs, so :func:`metrics_of` and :func:`primary_of` read both.
"""

from __future__ import annotations

LOWER_IS_BETTER = frozenset({"ece", "perplexity"})
PLAIN = frozenset({"perplexity", "return"})  # not fractions: shown with two decimals, not as percentages

# what a reader says about a metric it shows: only the metrics a report can define in one sentence
METRIC_NOTES = {"ece": "ece: expected calibration error (ECE), Σ |B|/n·|acc(B) − conf(B)| over 15 equal-width "
                       "confidence bins; lower is better.",
                "return": "return: mean undiscounted episode return of the deterministic policy (SB3's "
                          "evaluate_policy); higher is better.",
                "perplexity": "perplexity: exp of the mean negative log-likelihood of the reference completion tokens "
                              "(teacher forcing); lower is better."}


def metrics_of(entry: dict) -> dict[str, float]:
    """An entry's (or a generations row's) metrics: ``entry["metrics"]``, or for an entry written before metric
    dicts existed, ``{"accuracy": ..., "ece": ...}`` from its top-level fields (``ece`` only when present)."""
    if "metrics" in entry:
        return entry["metrics"]
    return {"accuracy": entry["accuracy"], **({"ece": entry["ece"]} if entry.get("ece") is not None else {})}


def primary_of(results: dict) -> str:
    """The name of the results' primary metric; results written before it was declared were scored on accuracy."""
    return results.get("primary_metric", "accuracy")


def metric_names(primary: str, entries: list[dict]) -> list[str]:
    """Every metric of ``entries`` once: the primary first, then the others in the order they first appear."""
    names = [primary]
    for entry in entries:
        names += [name for name in metrics_of(entry) if name not in names]
    return names


def metric_header(name: str) -> str:
    """A column header: the metric's own name in percent, with an arrow when lower is better."""
    return (name if name in PLAIN else f"{name} (%)") + (" ↓" if name in LOWER_IS_BETTER else "")


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals; a missing value as a dash."""
    return "—" if value is None else f"{100 * value:.2f}"


def show_metric(name: str, value: float | None) -> str:
    """A metric's value as a report shows it: a percentage, or the value itself for :data:`PLAIN` metrics."""
    if name in PLAIN:
        return "—" if value is None else f"{value:.2f}"
    return percent(value)


def metric_scale(name: str) -> tuple[float, str]:
    """How a metric is shown: a fraction ×100 in percent, its differences in percentage points ("pp"); a
    :data:`PLAIN` metric (an episode return, perplexity) as it is, its differences in its own units ("")."""
    return (1.0, "") if name in PLAIN else (100.0, "pp")


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: the header, the ``| --- |`` rule, one line per row."""
    return ["| " + " | ".join(row) + " |" for row in [header, ["---"] * len(header), *rows]]


def metric_notes(names: list[str]) -> list[str]:
    """The definitions of those of ``names`` that a report explains (ECE, perplexity)."""
    return [METRIC_NOTES[name] for name in names if name in METRIC_NOTES]
