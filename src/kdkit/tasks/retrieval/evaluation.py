"""The retrieval task's evaluation: both models over the whole corpus, on the recipe's evaluation split.

The student encodes the corpus into a FAISS index (:class:`kdkit.report.retrieval.DenseIndex`) and each query into
one vector; the teacher scores each query against every passage with MaxSim over its token vectors, read from the
teacher cache (so the corpus is encoded by the teacher once, for training and evaluation alike). Latency is the
median wall-clock time to answer one query: encode it (the teacher encodes live) and search (the student's index;
the teacher's exhaustive MaxSim over the corpus vectors held in memory). Index size: the student's serialised
FAISS index; the teacher's fp16 token vectors of the corpus without special tokens, as a ColBERT index stores
them before compression.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from kdkit.capture import hidden_size, num_layers
from kdkit.errors import DataError
from kdkit.loading import load_model
from kdkit.losses import maxsim
from kdkit.report.bootstrap import PER_QUERY
from kdkit.report.evaluate import count_parameters
from kdkit.report.retrieval import MB, DenseIndex, ir_metrics, per_query_metrics, query_latency
from kdkit.signals import fingerprint_model, fingerprint_tokenizer
from kdkit.store import ArtifactStore, digest
from kdkit.tasks.retrieval.data import BM25Index
from kdkit.tasks.retrieval.task import MaxSimTeacher, Tokens, encode, pad



def _device(model) -> torch.device:
    return next(model.parameters()).device


def encode_texts(model, ids: list[list[int]], pad_token_id: int, similarity: str, batch_size: int = 64
                 ) -> torch.Tensor:
    """Bi-encoder vectors of tokenised texts, in their order (batched by length, so little padding)."""
    order = np.argsort([len(row) for row in ids], kind="stable")
    out = [None] * len(ids)
    device = _device(model)
    for start in range(0, len(ids), batch_size):
        rows = order[start:start + batch_size]
        batch_ids, mask = pad([ids[i] for i in rows], pad_token_id)
        vectors = encode(model, batch_ids.to(device), mask.to(device), similarity).float().cpu()
        for i, vector in zip(rows, vectors):
            out[i] = vector
    return torch.stack(out)


def _student_entry(prep, queries, qrels, name: str, scores: dict | None = None) -> tuple[dict, dict]:
    """The bi-encoder's entry and per-query values; with ``scores`` (stored ``metrics``, ``per_query``,
    ``index_mb``) only the latency is measured, on an index of random vectors of the same shape (exact search
    costs the same whatever the values; an HNSW graph is built from the real ones)."""
    recipe, corpus = prep.recipe, prep.data.corpus
    model, tokenizer = prep.student.eval(), prep.tokenizer
    tokens = Tokens(tokenizer, recipe.data.query_max_length, recipe.data.max_length)
    similarity, size = recipe.retrieval.similarity, recipe.training.eval_batch_size
    ann = None if recipe.retrieval.ann == "exact" else "hnsw"
    with torch.inference_mode():
        if scores is None or ann is not None:
            passages = encode_texts(model, tokens(list(corpus.values()), "passage"), tokenizer.pad_token_id,
                                    similarity, size)
        else:
            passages = torch.randn(len(corpus), hidden_size(model))
        index = DenseIndex(list(corpus), passages, ann=ann)
        if scores is None:
            vectors = encode_texts(model, tokens([q.text for q in queries], "query"), tokenizer.pad_token_id,
                                   similarity, size)
            run = index.search([q.id for q in queries], vectors, recipe.retrieval.top_k)
            scores = {"metrics": ir_metrics(run, qrels), "per_query": per_query_metrics(run, qrels),
                      "index_mb": index.size_mb}

    def encode_one(texts: list[str]) -> torch.Tensor:
        return encode_texts(model, tokens(texts, "query"), tokenizer.pad_token_id, similarity)

    latency = query_latency(encode_one, index, [q.text for q in queries], k=recipe.retrieval.top_k,
                            repeats=recipe.evaluation.latency_repeats)
    entry = {"name": name, "params": count_parameters(model), "n": len(queries), "metrics": scores["metrics"],
             "latency": {"1": latency}, "index_mb": scores["index_mb"]}
    return entry, scores["per_query"]


def _teacher_entry(task, prep, queries, qrels, name: str, chunk: int = 128) -> tuple[dict, dict]:
    recipe, corpus = prep.recipe, prep.data.corpus
    cache = task.teacher_vectors(prep)
    special = prep.teacher_tokenizer.all_special_ids
    stored = MaxSimTeacher.cached(cache, special)
    tokens = Tokens(prep.teacher_tokenizer, recipe.data.query_max_length, recipe.data.max_length)
    pad_id = prep.teacher_tokenizer.pad_token_id
    # the corpus's token vectors, fp16 in memory (2,089 BBC passages × 256 tokens × 384: 0.4 GB), in chunks
    chunks, stored_values = [], 0
    passage_ids = tokens(list(corpus.values()), "passage")
    for start in range(0, len(passage_ids), chunk):
        ids, mask = pad(passage_ids[start:start + chunk], pad_id)
        vectors, keep = stored.token_vectors(ids, mask)
        chunks.append((vectors.half(), keep))
        stored_values += int(keep.sum()) * vectors.shape[-1]

    def search(query_vectors: tuple[torch.Tensor, torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.cat([maxsim_chunk(query_vectors, c) for c in chunks], dim=1)
        return scores.topk(min(k, scores.shape[1]), dim=1)

    query_ids = tokens([q.text for q in queries], "query")
    run = {}
    for start in range(0, len(queries), 32):
        ids, mask = pad(query_ids[start:start + 32], pad_id)
        values, rows = search(stored.token_vectors(ids, mask), recipe.retrieval.top_k)
        pids = list(corpus)
        for query, found, scores in zip(queries[start:start + 32], rows.tolist(), values.tolist()):
            run[query.id] = {pids[r]: s for r, s in zip(found, scores)}

    live = MaxSimTeacher.live(prep.teacher, special)

    def encode_one(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = pad(tokens(texts, "query"), pad_id)
        device = _device(prep.teacher)
        vectors, keep = live.token_vectors(ids.to(device), mask.to(device))
        return vectors.cpu(), keep.cpu()

    latency = query_latency(encode_one, search, [q.text for q in queries], k=recipe.retrieval.top_k,
                            repeats=recipe.evaluation.latency_repeats)
    entry = {"name": name, "params": count_parameters(prep.teacher), "n": len(queries),
             "metrics": ir_metrics(run, qrels), "latency": {"1": latency}, "index_mb": stored_values * 2 / MB}
    return entry, per_query_metrics(run, qrels)


def maxsim_chunk(query: tuple[torch.Tensor, torch.Tensor], passages: tuple[torch.Tensor, torch.Tensor]
                 ) -> torch.Tensor:
    return maxsim(query[0], query[1], passages[0].float(), passages[1])


def _bm25_entry(prep, queries, qrels) -> tuple[dict, dict]:
    index = BM25Index(prep.data.corpus)
    top_k = prep.recipe.retrieval.top_k
    run = {q.id: dict(hits) for q, hits in zip(queries, index.search([q.text for q in queries], top_k))}
    latency = query_latency(lambda texts: texts, lambda texts, k: index.search(texts, k), [q.text for q in queries],
                            k=top_k, repeats=prep.recipe.evaluation.latency_repeats)
    entry = {"name": "BM25", "params": 0, "n": len(queries), "metrics": ir_metrics(run, qrels),
             "latency": {"1": latency}, "index_mb": index.size_mb}
    return entry, per_query_metrics(run, qrels)


def _zero_shot_entry(prep, queries, qrels) -> tuple[dict, dict]:
    """The student's pretrained model as it is (``student.init: pretrained``): what training added is the
    difference. Its metrics and per-query values are computed once per (model, tokenizer, data, settings) and read
    back from the artifact store after; its latency is measured again each time."""
    recipe = prep.recipe
    model, tokenizer = load_model(recipe.student.model, AutoModel, "student.model")
    model.to(_device(prep.student))
    zero_shot = replace(prep, student=model, tokenizer=tokenizer)
    key = digest({"model": fingerprint_model(model), "tokenizer": fingerprint_tokenizer(tokenizer),
                  "data": prep.data.digest, "split": recipe.evaluation.split,
                  "retrieval": recipe.retrieval.model_dump(),
                  "lengths": [recipe.data.query_max_length, recipe.data.max_length]})
    store = ArtifactStore()
    stored = store.get_json("evaluations", key)
    name = f"{recipe.student.model} zero-shot ({recipe.retrieval.similarity})"
    entry, per_query = _student_entry(zero_shot, queries, qrels, name, scores=stored)
    if stored is None:
        store.put_json("evaluations", key, {"metrics": entry["metrics"], "per_query": per_query,
                                            "index_mb": entry["index_mb"]})
    return entry, per_query


def evaluate_run(task, prep, out: Path | None, references: bool = True) -> dict:
    """The report's results of a retrieval run (see :mod:`kdkit.report.results`); per-query values of every metric
    go to ``per_query.json`` in ``out`` (None: nowhere). ``references``: BM25 and, for a pretrained student, its
    model before training, measured beside."""
    recipe = prep.recipe
    split = recipe.evaluation.split
    queries = prep.data.queries(split)
    if not queries:
        raise DataError(f"the {split} split has no queries to evaluate; give data with a {split} split")
    qrels = prep.data.qrels(split)
    entries, per_query = {}, {}
    if prep.teacher is not None:
        teacher = recipe.teacher.model + (" (fine-tuned)" if recipe.teacher.finetune else "")
        entries["teacher"], per_query["teacher"] = _teacher_entry(task, prep, queries, qrels, f"{teacher} MaxSim")
    name = f"{num_layers(prep.student)}-layer bi-encoder ({recipe.student.init}, {recipe.retrieval.similarity})"
    entries["student"], per_query["student"] = _student_entry(prep, queries, qrels, name)
    references = {"BM25": _bm25_entry(prep, queries, qrels)} if references else {}
    if references and recipe.student.init == "pretrained":
        references[f"zero-shot student ({recipe.retrieval.similarity})"] = _zero_shot_entry(prep, queries, qrels)
    if references:
        entries["references"] = {name: entry for name, (entry, _) in references.items()}
        per_query.update({name: values for name, (_, values) in references.items()})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / PER_QUERY).write_text(json.dumps(per_query) + "\n")
    return {"split": split, "dm_alpha": recipe.evaluation.dm_alpha, **entries, "corpus": len(prep.data.corpus),
            "top_k": recipe.retrieval.top_k, "ann": recipe.retrieval.ann,
            "latency_unit": "one query (encode it, search the corpus)", "torch_threads": torch.get_num_threads()}
