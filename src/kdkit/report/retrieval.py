"""Retrieval evaluation over the full corpus: IR metrics, a paired bootstrap between two systems, the dense index a
bi-encoder is served from and per-query latency.

A *run* is ``{query id: {passage id: score}}`` (higher is better; keep the raw float scores, since ties are broken
by the evaluator, not by dict order), *qrels* are ``{query id: {passage id: relevance}}``
(:meth:`kdkit.tasks.retrieval.data.RetrievalData.qrels`). Metrics come from ``ir-measures`` (trec_eval underneath);
a query of the qrels that the run lacks scores 0, a run's query absent from the qrels is ignored. Pass at least the
top 100 passages per query, or Recall@100 is understated.

The optional libraries (ir_measures, faiss) are imported inside the functions that use them, so importing
this module costs nothing for the other tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from kdkit.errors import ConfigError, DataError, NumericalError
from kdkit.report.bootstrap import bootstrap_runs, paired_bootstrap  # noqa: F401  (where they were first defined)

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

# kdkit's metric name → the ir-measures measure: RR@10 is MRR@10 (reciprocal rank counted in the top 10 only)
METRICS = {"mrr@10": "RR@10", "ndcg@10": "nDCG@10", "recall@1": "R@1", "recall@10": "R@10", "recall@100": "R@100"}
MB = 1e6  # index sizes in decimal megabytes, as disk and download sizes are quoted


def _measures() -> dict[str, Any]:
    import ir_measures

    return {name: ir_measures.parse_measure(spec) for name, spec in METRICS.items()}


def _checked_qrels(qrels: Qrels) -> dict[str, dict[str, int]]:
    if not qrels:
        raise DataError("there are no queries to evaluate: the qrels are empty")
    empty = [qid for qid, judged in qrels.items() if not any(rel > 0 for rel in judged.values())]
    if empty:
        raise DataError(f"queries without a relevant passage cannot be scored: {', '.join(map(str, empty[:5]))}")
    return {str(qid): {str(pid): int(rel) for pid, rel in judged.items()} for qid, judged in qrels.items()}


def _checked_run(run: Mapping[str, Mapping[str, float]]) -> Run:
    return {str(qid): {str(pid): float(score) for pid, score in hits.items()} for qid, hits in run.items()}


def ir_metrics(run: Mapping[str, Mapping[str, float]], qrels: Qrels) -> dict[str, float]:
    """MRR@10, nDCG@10 and Recall@1/10/100 (keys of ``METRICS``), each the mean over the queries of ``qrels``."""
    import ir_measures

    measures = _measures()
    values = ir_measures.calc_aggregate(list(measures.values()), _checked_qrels(qrels), _checked_run(run))
    return {name: float(values[measure]) for name, measure in measures.items()}


def per_query_metrics(run: Mapping[str, Mapping[str, float]], qrels: Qrels) -> dict[str, dict[str, float]]:
    """``{metric: {query id: value}}`` for every query of ``qrels`` (0 where the run lacks it): the per-query
    values whose means :func:`ir_metrics` gives, for :func:`paired_bootstrap`."""
    import ir_measures

    measures = _measures()
    qrels = _checked_qrels(qrels)
    names = {measure: name for name, measure in measures.items()}
    values = {name: dict.fromkeys(qrels, 0.0) for name in measures}
    for metric in ir_measures.iter_calc(list(measures.values()), qrels, _checked_run(run)):
        if metric.query_id in qrels:
            values[names[metric.measure]][metric.query_id] = float(metric.value)
    return values


def _matrix(vectors: Any, what: str) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu", torch.float32).numpy()
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty (n, dim) matrix, got shape {matrix.shape}")
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        raise NumericalError(f"{what} row {int(bad[0])} holds NaN or infinite values ({bad.size} rows in all); "
                             f"the encoder produced non-finite embeddings")
    return matrix


class DenseIndex:
    """A FAISS index of passage vectors, searched by inner product (dot product; cosine when the vectors are
    L2-normalised).

    ``ann=None``: exact search (``IndexFlatIP``). ``ann="hnsw"``: an HNSW graph (``IndexHNSWFlat``, ``hnsw_m``
    links per node, ``ef_search`` candidates per search), approximate but sub-linear in the corpus size.
    """

    ANN = (None, "hnsw")

    def __init__(self, ids: Sequence[str], vectors: Any, ann: str | None = None, hnsw_m: int = 32,
                 ef_search: int = 128):
        import faiss

        matrix = _matrix(vectors, "passage vectors")
        self.ids = [str(pid) for pid in ids]
        if len(self.ids) != matrix.shape[0]:
            raise ValueError(f"{len(self.ids)} passage ids for {matrix.shape[0]} passage vectors")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("passage ids must be unique")
        if ann not in self.ANN:
            raise ConfigError(f"ann {ann!r} is not an index type; valid: exact (None) or 'hnsw'")
        self.dim, self.ann = matrix.shape[1], ann
        if ann == "hnsw":
            self.index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = ef_search
        else:
            self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(matrix)

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, query_ids: Sequence[str], query_vectors: Any, k: int = 100) -> Run:
        """The run of the queries' ``k`` best passages (fewer when the corpus is smaller), scores = inner products."""
        matrix = _matrix(query_vectors, "query vectors")
        if len(query_ids) != matrix.shape[0] or matrix.shape[1] != self.dim:
            raise ValueError(f"{len(query_ids)} query ids for query vectors of shape {matrix.shape}; the index "
                             f"holds {self.dim}-dimensional vectors")
        scores, rows = self.index.search(matrix, min(k, len(self)))
        return {str(qid): {self.ids[row]: float(score) for row, score in zip(found, values) if row >= 0}
                for qid, found, values in zip(query_ids, rows, scores)}

    @property
    def size_mb(self) -> float:
        """The index's serialised size in MB (10⁶ bytes): what it takes on disk and, to within a few bytes, in
        memory. Exact: n × dim × 4 bytes plus a 45-byte header; HNSW adds its graph."""
        import faiss

        return faiss.serialize_index(self.index).nbytes / MB


def query_latency(encode: Callable[[list[str]], Any], index: DenseIndex | Callable[[Any, int], Any],
                  queries: Sequence[str], k: int = 100, repeats: int = 100, warmup: int = 3) -> dict:
    """Wall-clock seconds to answer one query: ``encode([text])`` then the search for its ``k`` best passages.

    ``index`` is a :class:`DenseIndex` or any ``search(encoded, k)`` (a teacher's MaxSim over cached token vectors).
    Like :func:`kdkit.report.evaluate.measure_latency`: ``warmup`` untimed queries first (first calls pay for
    allocation), then one timed query each for the first ``repeats`` texts (cycled if fewer), under
    ``torch.inference_mode``; CUDA is synchronised after each. Returns ``{"median_s", "p90_s", "n"}``.
    """
    if not queries:
        raise DataError("query_latency: there are no queries to time")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"query_latency: repeats {repeats} must be >= 1 and warmup {warmup} >= 0")
    if isinstance(index, DenseIndex):
        dense = index

        def search(encoded: Any, k: int) -> Any:
            return dense.search(["query"], encoded, k)
    else:
        search = index

    def sync() -> None:
        if torch.cuda.is_initialized():  # checked each time: the first encode may be what starts CUDA
            torch.cuda.synchronize()

    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            text = queries[(i if i < warmup else i - warmup) % len(queries)]
            sync()
            start = time.perf_counter()
            search(encode([text]), k)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    median, p90 = np.quantile(times, [0.5, 0.9])
    return {"median_s": float(median), "p90_s": float(p90), "n": len(times)}
