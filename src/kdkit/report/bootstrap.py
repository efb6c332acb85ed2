"""Paired bootstrap between two systems scored on the same examples (queries, test articles).

A run's evaluation may keep its per-example scores in ``per_query.json``: ``{role: {metric: {example id: value}}}``
(role ``student``, ``teacher`` or a reference such as ``BM25``), as the retrieval and generation tasks write it.
:func:`paired_bootstrap` gives the mean difference of two systems with a percentile interval; :func:`bootstrap_runs`
reads two runs' files; :func:`per_example` one run's values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kdkit.errors import ConfigError, DataError

PER_QUERY = "per_query.json"


def paired_bootstrap(per_query_a: Mapping[str, float] | Sequence[float],
                     per_query_b: Mapping[str, float] | Sequence[float], n: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Mean per-query difference a − b and its percentile bootstrap confidence interval.

    The queries are resampled with replacement ``n`` times (``numpy.random.default_rng(seed)``), the same queries
    for both systems (paired), and the interval is the central ``confidence`` share of the resampled mean
    differences. Mappings are paired by query id (both must hold the same ids), sequences by position.
    Returns ``{"mean_difference", "ci_low", "ci_high", "n_queries", "n_resamples", "confidence"}``.
    """
    if isinstance(per_query_a, Mapping) != isinstance(per_query_b, Mapping):
        raise ConfigError("paired_bootstrap: give two mappings (query id → value) or two sequences, not one of each")
    if isinstance(per_query_a, Mapping):
        if per_query_a.keys() != per_query_b.keys():
            odd = sorted(set(per_query_a) ^ set(per_query_b), key=str)[:5]
            raise DataError(f"paired_bootstrap: the two systems were scored on different queries, e.g. "
                            f"{', '.join(map(str, odd))}")
        qids = sorted(per_query_a, key=str)
        a = np.array([per_query_a[q] for q in qids], dtype=np.float64)
        b = np.array([per_query_b[q] for q in qids], dtype=np.float64)
    else:
        a, b = np.asarray(per_query_a, dtype=np.float64), np.asarray(per_query_b, dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1:
            raise DataError(f"paired_bootstrap: per-query values of shapes {a.shape} and {b.shape}; both need one "
                            f"value per query, the same queries in the same order")
    if a.size == 0:
        raise DataError("paired_bootstrap: there are no queries")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or not 0 < confidence < 1:
        raise ConfigError(f"paired_bootstrap: n {n!r} must be a positive integer and confidence {confidence!r} "
                          f"in (0, 1)")
    difference = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    rows = max(1, (1 << 22) // difference.size)  # bounds the index matrix to 32 MB
    for start in range(0, n, rows):
        count = min(rows, n - start)
        means[start:start + count] = difference[rng.integers(0, difference.size, (count, difference.size))].mean(1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"mean_difference": float(difference.mean()), "ci_low": float(low), "ci_high": float(high),
            "n_queries": int(difference.size), "n_resamples": n, "confidence": confidence}



def per_example(folder: str | Path, metric: str, role: str = "student") -> dict[str, float]:
    """One run's per-example ``metric`` values of ``role``, from its ``per_query.json``."""
    folder = Path(folder)
    try:
        stored = json.loads((folder / PER_QUERY).read_text())
    except (OSError, ValueError):
        raise DataError(f"'{folder}' holds no readable {PER_QUERY} (written by classification, retrieval and "
                        f"generation runs)"
                        ) from None
    if role not in stored or metric not in stored[role]:
        raise DataError(f"'{folder / PER_QUERY}' has no {metric} values for '{role}'; it has {', '.join(stored)}")
    return stored[role][metric]


def bootstrap_runs(run_a: str | Path, run_b: str | Path, metric: str = "mrr@10", role_a: str = "student",
                   role_b: str = "student", n: int = 10_000, seed: int = 0) -> dict:
    """:func:`paired_bootstrap` of two runs' per-example ``metric`` (their ``per_query.json``), system a minus
    system b; ``role_*`` picks the entry (``student``, ``teacher`` or a reference such as ``BM25``)."""
    return paired_bootstrap(per_example(run_a, metric, role_a), per_example(run_b, metric, role_b), n=n, seed=seed)
