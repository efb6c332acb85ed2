"""Retrieval evaluation: IR metrics against hand-computed values, exact dense search, the paired bootstrap, BM25 and
per-query latency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdkit.errors import DataError, NumericalError
from kdkit.report.retrieval import DenseIndex, ir_metrics, paired_bootstrap, per_query_metrics, query_latency

QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d4": 1}}
RUN = {
    "q1": {"d0": 0.9, "d1": 0.8, "d5": 0.7},  # the relevant d1 at rank 2
    "q2": {"d3": 0.9, "d0": 0.8, "d2": 0.7},  # the relevant d3 at rank 1, d2 at rank 3
    # the relevant d4 at rank 12, below eleven others: outside every @10 cutoff, inside @100
    "q3": {**{f"x{i}": 1.0 - i / 100 for i in range(11)}, "d4": 0.5},
}


def test_ir_metrics_match_a_hand_computed_case():
    # q1: RR = 1/2; DCG = 1/log2(1 + 2) = 0.630930, ideal DCG = 1, so nDCG = 0.630930; R@1 0, R@10 1, R@100 1
    # q2: RR = 1; DCG = 1/log2(2) + 1/log2(4) = 1.5, ideal = 1 + 1/log2(3) = 1.630930, nDCG = 0.919721;
    #     R@1 = 1/2, R@10 = 1, R@100 = 1
    # q3: rank 12, so RR@10 = 0 (an uncut reciprocal rank would be 1/12), nDCG@10 = 0, R@1 = R@10 = 0, R@100 = 1
    # means over the 3 queries:
    expected = {"mrr@10": (0.5 + 1 + 0) / 3,                                              # 0.5
                "ndcg@10": (1 / math.log2(3) + 1.5 / (1 + 1 / math.log2(3)) + 0) / 3,   # 0.516884
                "recall@1": (0 + 0.5 + 0) / 3,                                        # 0.166667
                "recall@10": (1 + 1 + 0) / 3,                                         # 0.666667
                "recall@100": 1.0}
    assert ir_metrics(RUN, QRELS) == pytest.approx(expected, abs=1e-6)
    assert expected["ndcg@10"] == pytest.approx(0.516884, abs=1e-6)


def test_per_query_values_average_to_the_metrics_and_count_missing_queries_as_zero():
    qrels = {**QRELS, "q4": {"d9": 1}}  # q4 has no entry in the run
    per_query = per_query_metrics({**RUN, "stray": {"d1": 1.0}}, qrels)
    assert per_query["mrr@10"] == {"q1": 0.5, "q2": 1.0, "q3": 0.0, "q4": 0.0}
    assert per_query["recall@100"]["q3"] == 1.0
    overall = ir_metrics(RUN, qrels)
    assert {name: sum(values.values()) / 4 for name, values in per_query.items()} == pytest.approx(overall)
    assert overall["mrr@10"] == pytest.approx(1.5 / 4)


def test_empty_qrels_are_refused():
    with pytest.raises(DataError, match="no queries"):
        ir_metrics(RUN, {})


@pytest.mark.parametrize("ann", [None, "hnsw"])
def test_dense_index_search_equals_numpy_top_k(ann):
    rng = np.random.default_rng(0)
    passages, queries = rng.standard_normal((200, 16)), rng.standard_normal((7, 16))
    ids = [f"p{i}" for i in range(200)]
    index = DenseIndex(ids, torch.from_numpy(passages), ann=ann)
    run = index.search([f"q{i}" for i in range(7)], queries, k=10)
    scores = queries @ passages.T
    for row, (qid, hits) in enumerate(run.items()):
        top = np.argsort(-scores[row])[:10]
        if ann is None:
            assert list(hits) == [ids[i] for i in top]
            assert list(hits.values()) == pytest.approx(scores[row, top], abs=1e-4)
        else:  # approximate: at this size and efSearch the graph finds (nearly) all true neighbours
            assert len(set(hits) & {ids[i] for i in top}) >= 9
    vector_bytes = 200 * 16 * 4
    if ann is None:  # the vectors plus a header of a few dozen bytes
        assert vector_bytes / 1e6 < index.size_mb < (vector_bytes + 1000) / 1e6
    else:  # the vectors plus the graph's links
        assert index.size_mb > (vector_bytes + 200 * 32 * 4) / 1e6
    assert len(DenseIndex(ids[:3], passages[:3]).search(["q"], queries[:1], k=10)["q"]) == 3


def test_dense_index_refuses_non_finite_vectors():
    vectors = np.ones((4, 3))
    vectors[2, 1] = np.nan
    with pytest.raises(NumericalError, match="row 2"):
        DenseIndex(["a", "b", "c", "d"], vectors)


def test_paired_bootstrap_interval_holds_the_true_difference():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 300)
    noise = np.tile([0.2, -0.2], 150)  # mean exactly 0: the true mean difference is 0.05
    a = b + 0.05 + noise
    qids = [f"q{i}" for i in range(300)]
    result = paired_bootstrap(dict(zip(qids, a)), dict(zip(qids, b)), n=2000, seed=0)
    assert result["mean_difference"] == pytest.approx(0.05)
    assert result["ci_low"] < 0.05 < result["ci_high"]
    # the standard error is 0.2 / sqrt(300) = 0.0115, so the 95% interval is about ±0.023 and excludes 0
    assert 0 < result["ci_low"] and result["ci_high"] - result["ci_low"] == pytest.approx(4 * 0.0115, rel=0.15)
    # mappings pair by query id, whatever their order; sequences by position
    assert paired_bootstrap(dict(zip(qids[::-1], a[::-1])), dict(zip(qids, b)), n=2000, seed=0) == result
    positional = paired_bootstrap(list(a), list(b), n=2000, seed=0)
    assert positional["ci_low"] < 0.05 < positional["ci_high"]
    same = paired_bootstrap(list(b), list(b), n=500, seed=1)
    assert same["ci_low"] == same["ci_high"] == same["mean_difference"] == 0
    with pytest.raises(DataError, match="different queries"):
        paired_bootstrap({"q1": 1.0}, {"q2": 1.0})


def test_query_latency_times_encode_and_search():
    index = DenseIndex(["a", "b"], np.eye(2))
    calls = []

    def encode(texts):
        calls.append(texts)
        return torch.ones(len(texts), 2)

    timing = query_latency(encode, index, ["first query", "second query"], k=1, repeats=5, warmup=2)
    assert timing["n"] == 5 and 0 < timing["median_s"] <= timing["p90_s"]
    assert len(calls) == 7 and all(len(texts) == 1 for texts in calls)
    searched = []
    query_latency(encode, lambda encoded, k: searched.append((tuple(encoded.shape), k)), ["q"], k=3, repeats=2,
                  warmup=0)
    assert searched == [((1, 2), 3)] * 2


def test_bootstrap_runs_pairs_two_runs_per_query_values(tmp_path):
    import json

    from kdkit.report.retrieval import bootstrap_runs

    for name, values in (("a", {"q1": 1.0, "q2": 0.5, "q3": 1.0}), ("b", {"q1": 0.5, "q2": 0.5, "q3": 0.0})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_query.json").write_text(json.dumps({"student": {"mrr@10": values},
                                                                     "BM25": {"mrr@10": values}}))
    result = bootstrap_runs(tmp_path / "a", tmp_path / "b", n=2000)
    assert result["mean_difference"] == pytest.approx(0.5) and result["n_queries"] == 3
    assert result["ci_low"] <= 0.5 <= result["ci_high"]
    assert bootstrap_runs(tmp_path / "a", tmp_path / "a", role_b="BM25", n=100)["mean_difference"] == 0
    with pytest.raises(DataError, match="no ndcg@10 values for 'student'"):
        bootstrap_runs(tmp_path / "a", tmp_path / "b", metric="ndcg@10")
    with pytest.raises(DataError, match="no readable per_query.json"):
        bootstrap_runs(tmp_path, tmp_path / "b")
