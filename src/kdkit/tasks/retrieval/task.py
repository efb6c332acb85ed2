"""Retrieval: a late-interaction teacher (ColBERT MaxSim) distilled into a single-vector bi-encoder (TCT-ColBERT).

- **Teacher**: any HF encoder read as ColBERT reads one: per-token vectors of the last layer, L2-normalised, the
  special tokens ([CLS], [SEP]) and padding excluded, scored ``φ_t(q, d) = Σ_i max_j ⟨q_i, d_j⟩``
  (:func:`kdkit.losses.maxsim`). Zero-shot (a sentence encoder as it is), or fine-tuned first with in-batch
  negatives (``teacher.finetune``, stored like classification teachers). No [Q]/[D] markers, no query
  augmentation with [MASK] and no 128-d projection (the released ColBERT has them): the teacher is a plain encoder.
- **Student**: a bi-encoder, ``φ_s(q, d) = ⟨mean(q), mean(d)⟩`` (``retrieval.similarity: dot``) or their cosine;
  the mean is over every real token, [CLS] and [SEP] included, as sentence-transformers pools, so the exported
  folder gives the same vectors. Built by the shared student builders (pretrained, teacher layers, config).
- **Batches**: B queries, their B positives and (``data.negatives: bm25``) one BM25-mined hard negative each; both
  models score every query against all P = 2B passages (in-batch negatives), gold in column i. The losses are
  :mod:`kdkit.terms.ranking`'s (``tct``, ``margin_mse``, ``contrastive``).
- **Teacher cost**: the teacher's per-token vectors of every passage of the corpus and every query are cached once
  (fp16, memory-mapped, :class:`~kdkit.signals.TeacherCache` keyed by the teacher's token ids), so training scores
  each batch with MaxSim over cached vectors and the teacher's evaluation reads the same cache.
- **Evaluation**: over the whole corpus: MRR@10, nDCG@10, Recall@1/10/100 (``ir-measures``); the student through a
  FAISS index (exact inner product, or HNSW with ``retrieval.ann: hnsw``), the teacher by exhaustive MaxSim; index
  size in MB (the student's FAISS index; the teacher's fp16 token vectors) and median latency of one query (encode +
  search). Per-query values are kept in ``per_query.json`` for paired bootstraps between runs.
- **Export**: the student is a sentence-transformers folder (Transformer, mean Pooling, Normalize for cosine).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from pydantic import Field, model_validator
from transformers import AutoModel, set_seed

from kdkit import __version__
from kdkit.capture import Representations, num_layers
from kdkit.config import Recipe
from kdkit.engine.pipeline import Prepared, TrainerTask, stored_teacher, teacher_cache
from kdkit.engine.trainer import DistillationModule, DistillationTrainer, training_arguments
from kdkit.errors import ConfigError
from kdkit.loading import load_model
from kdkit.losses import maxsim
from kdkit.schema import TOKENS_MAX, Count, Seed, Strict
from kdkit.signals import CachedTeacher, SignalSpec, TeacherCache
from kdkit.store import digest
from kdkit.tasks import register
from kdkit.tasks.retrieval.data import RetrievalData, load_retrieval_data, mine_bm25_negatives
from kdkit.terms import build_terms
from kdkit.terms.ranking import ContrastiveLoss
from kdkit.vocab import same_vocabulary

SIMILARITIES = ("dot", "cosine")


class RetrievalDataConfig(Strict):
    """Where queries and passages come from (``dataset``: a named set such as ``bbc_headlines`` or a BEIR folder;
    or jsonl pair files), how long texts may be (word pieces), and where hard negatives come from."""

    dataset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    max_length: int = Field(256, gt=2, le=TOKENS_MAX)  # passages
    query_max_length: int = Field(32, gt=2, le=TOKENS_MAX)
    negatives: Literal["bm25", "none"] = "bm25"
    bm25_depth: int = Field(10, ge=1, le=1000)  # a query's negative is drawn from its best non-relevant BM25 hits
    max_train_samples: Count | None = None  # training queries
    seed: Seed = 0

    @model_validator(mode="after")
    def _one_source(self) -> "RetrievalDataConfig":
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("give exactly one of data.dataset (a named set or a BEIR folder) or data.train_file")
        return self


class RetrievalConfig(Strict):
    """How the student scores and is served: ``similarity`` dot or cosine, ``top_k`` passages retrieved per query
    in evaluation (Recall@100 needs 100), ``ann`` exact or HNSW search of the student's FAISS index."""

    similarity: Literal["dot", "cosine"] = "dot"
    top_k: int = Field(100, ge=1, le=10_000)
    ann: Literal["exact", "hnsw"] = "exact"


class RetrievalRecipe(Recipe):
    task: str = "retrieval"
    data: RetrievalDataConfig
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)

    @model_validator(mode="after")
    def _negatives_for_margins(self) -> "RetrievalRecipe":
        if self.data.negatives == "none" and any(term.name == "margin_mse" for term in self.losses):
            raise ConfigError("recipe key 'data.negatives': loss 'margin_mse' compares each query's positive with "
                              "its own negative; use data.negatives: bm25")
        return self


def load_data(cfg: RetrievalDataConfig) -> RetrievalData:
    """The data of a recipe: its source and at most ``max_train_samples`` training queries (seeded). Negatives are
    mined later (:func:`with_negatives`), once the models are checked: mining writes to the artifact store."""
    data = load_retrieval_data(cfg.dataset or cfg.train_file, train_file=cfg.train_file,
                               validation_file=cfg.validation_file, test_file=cfg.test_file, seed=cfg.seed)
    train = data.queries("train")
    if cfg.max_train_samples and len(train) > cfg.max_train_samples:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train))[:cfg.max_train_samples])
        data = replace(data, splits={**data.splits, "train": [train[i] for i in keep]})
    return data


def with_negatives(data: RetrievalData, cfg: RetrievalDataConfig) -> RetrievalData:
    """``data`` with one BM25 negative for each training query that has none of its own (``negatives: bm25``),
    drawn from its ``bm25_depth`` best non-relevant passages (cached in the artifact store)."""
    lacking = {q.id for q in data.queries("train") if not q.negatives} if cfg.negatives == "bm25" else set()
    if not lacking:
        return data
    mined = mine_bm25_negatives(data, "train", k=1, depth=cfg.bm25_depth, seed=cfg.seed)
    return data.with_negatives("train", {qid: ids for qid, ids in mined.items() if qid in lacking})


# --- the two models' scores -------------------------------------------------------------------------------------

def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling: the mean over real tokens (specials included), ``(B, L, D) → (B, D)``."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def encode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, similarity: str) -> torch.Tensor:
    """The bi-encoder's vector of each text: mean-pooled last layer, L2-normalised for cosine."""
    hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    vectors = mean_pool(hidden, attention_mask)
    return F.normalize(vectors, dim=-1) if similarity == "cosine" else vectors


def student_forward(similarity: str):
    """The task's forward for a ``similarity``: the batch's ``(B, P)`` student score matrix as ``logits``."""
    def forward(capture, batch: dict) -> Representations:
        queries = encode(capture.model, batch["input_ids"], batch["attention_mask"], similarity)
        passages = encode(capture.model, batch["passage_input_ids"], batch["passage_attention_mask"], similarity)
        return Representations(logits=queries @ passages.T, attention_mask=batch["attention_mask"])
    return forward


def token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    """The tokens MaxSim counts: real tokens that are not special ([CLS], [SEP], padding)."""
    return attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(input_ids.device))


class MaxSimTeacher:
    """The teacher signal source of the retrieval task: ``(B, P)`` MaxSim scores as ``logits``.

    ``vectors(ids, mask)`` gives the last layer's token vectors ``(N, L, D)``: the live encoder's, or the cached ones
    (:meth:`cached`); they are L2-normalised and the special tokens dropped here."""

    def __init__(self, vectors, special_ids: list[int], model=None):
        self.vectors, self.model = vectors, model
        self.special_ids = torch.tensor(sorted(set(special_ids)), dtype=torch.long)

    @classmethod
    def live(cls, model, special_ids: list[int]) -> "MaxSimTeacher":
        model = model.eval().requires_grad_(False)
        return cls(lambda ids, mask: model(input_ids=ids, attention_mask=mask).last_hidden_state, special_ids, model)

    @classmethod
    def cached(cls, cache: TeacherCache, special_ids: list[int]) -> "MaxSimTeacher":
        source, layer = CachedTeacher(cache), cache.spec.hidden_layers[0]
        return cls(lambda ids, mask: source({"input_ids": ids, "attention_mask": mask}).hidden_states[layer],
                   special_ids)

    def to(self, device) -> "MaxSimTeacher":
        if self.model is not None:
            self.model.to(device)
        return self

    def token_vectors(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised token vectors and the mask of the tokens that count."""
        return F.normalize(self.vectors(ids, mask).float(), dim=-1), token_mask(ids, mask, self.special_ids)

    @torch.no_grad()
    def __call__(self, batch: dict) -> Representations:
        prefix = "teacher_" if "teacher_input_ids" in batch else ""
        queries = self.token_vectors(batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"])
        passages = self.token_vectors(batch[f"{prefix}passage_input_ids"], batch[f"{prefix}passage_attention_mask"])
        return Representations(logits=maxsim(*queries, *passages))


# --- batches ------------------------------------------------------------------------------------------------------

def pad(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their attention mask."""
    ids = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


class RetrievalCollator:
    """Rows ``{"query", "positive"[, "negative"]}`` of token ids (and ``teacher_*`` of the teacher's own) → a
    batch: the queries as ``input_ids``/``attention_mask``, the passages (B positives, then the B negatives) as
    ``passage_input_ids``/``passage_attention_mask``, ``labels`` = each query's gold column (its positive)."""

    def __init__(self, pad_token_id: int, teacher_pad_token_id: int | None = None):
        self.pad, self.teacher_pad = pad_token_id, teacher_pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        batch = {}
        for prefix, value in (("", self.pad), ("teacher_", self.teacher_pad)):
            if f"{prefix}query" not in rows[0]:
                continue
            passages = [r[f"{prefix}positive"] for r in rows] + [r[f"{prefix}negative"] for r in rows
                                                                if r.get(f"{prefix}negative") is not None]
            batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"] = pad([r[f"{prefix}query"] for r in rows],
                                                                                value)
            batch[f"{prefix}passage_input_ids"], batch[f"{prefix}passage_attention_mask"] = pad(passages, value)
        batch["labels"] = torch.arange(len(rows))
        return batch


def _texts_collator(pad_token_id: int):
    def collate(rows: list[dict]) -> dict:
        ids, mask = pad([r["input_ids"] for r in rows], pad_token_id)
        return {"input_ids": ids, "attention_mask": mask}
    return collate


class Tokens:
    """Token ids of texts, each text tokenised once (queries and passages have their own length)."""

    def __init__(self, tokenizer, query_max_length: int, max_length: int):
        self.tokenizer, self.lengths = tokenizer, {"query": query_max_length, "passage": max_length}

    def __call__(self, texts: list[str], kind: str) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.lengths[kind])["input_ids"]


@register
class RetrievalTask(TrainerTask):
    """Passage retrieval: late-interaction teacher, bi-encoder student (TCT-ColBERT, Margin-MSE, in-batch CE)."""

    name = "retrieval"
    recipe = RetrievalRecipe
    primary_metric = "mrr@10"
    pipeline_tag = "sentence-similarity"
    auto_class = AutoModel

    def load_data(self, recipe):
        return load_data(recipe.data)

    def module_forward(self, recipe):
        return student_forward(recipe.retrieval.similarity)

    def _rows(self, prep: Prepared, split: str = "train") -> list[tuple[str, str, str | None]]:
        """(query, positive, negative) texts: one row per relevant passage of each query of ``split``."""
        corpus, rows = prep.data.corpus, []
        for query in prep.data.queries(split):
            for i, pid in enumerate(query.relevant):
                negative = None
                if prep.recipe.data.negatives != "none" and query.negatives:
                    negative = corpus[query.negatives[i % len(query.negatives)]]
                rows.append((query.text, corpus[pid], negative))
        return rows

    def tokenize(self, prep):
        prep.data = with_negatives(prep.data, prep.recipe.data)
        rows = self._rows(prep)
        if not rows:
            return DatasetDict({"train": Dataset.from_dict({"query": [], "positive": []})})
        views = [("", prep.tokenizer)]
        if prep.teacher is not None and not same_vocabulary(prep.tokenizer, prep.teacher_tokenizer):
            views.append(("teacher_", prep.teacher_tokenizer))
        columns = {}
        for prefix, tokenizer in views:
            tokens = Tokens(tokenizer, prep.recipe.data.query_max_length, prep.recipe.data.max_length)
            columns[f"{prefix}query"] = tokens([q for q, _, _ in rows], "query")
            columns[f"{prefix}positive"] = tokens([p for _, p, _ in rows], "passage")
            if all(n is not None for _, _, n in rows):
                columns[f"{prefix}negative"] = tokens([n for _, _, n in rows], "passage")
        return DatasetDict({"train": Dataset.from_dict(columns)})

    def collator(self, prep):
        return RetrievalCollator(prep.tokenizer.pad_token_id, prep.teacher_tokenizer.pad_token_id)

    def num_outputs(self, prep):
        return 0  # scores over a batch's passages: no fixed output axis

    # --- the teacher's signals: token vectors of the whole corpus and every query, cached once ---------------------
    def _teacher_texts(self, prep: Prepared) -> Dataset:
        """The teacher's token ids of every passage of the corpus and every query of every split (unique)."""
        tokens = Tokens(prep.teacher_tokenizer, prep.recipe.data.query_max_length, prep.recipe.data.max_length)
        queries = [q.text for split in ("train", "validation", "test") for q in prep.data.queries(split)]
        ids = tokens(list(prep.data.corpus.values()), "passage") + tokens(queries, "query")
        unique = list({tuple(row): row for row in ids}.values())
        return Dataset.from_dict({"input_ids": unique, "attention_mask": [[1] * len(row) for row in unique]})

    def cache_plan(self, prep, train):
        live = [r for r in (term.cache_request() for term in prep.module.terms) if isinstance(r, str)]
        if live:
            return None, live[0], None, None
        spec = SignalSpec(logits=None, hidden_layers=(num_layers(prep.teacher),), dtype="float16")
        return spec, "", self._teacher_texts(prep), _texts_collator(prep.teacher_tokenizer.pad_token_id)

    def signal_source(self, prep, cache):
        special = prep.teacher_tokenizer.all_special_ids
        return MaxSimTeacher.cached(cache, special) if cache is not None else MaxSimTeacher.live(prep.teacher, special)

    def finetune_teacher(self, recipe, data) -> str:
        """Fine-tune the teacher's MaxSim scores with in-batch negatives (``contrastive``), once; the stored folder.

        The key covers the teacher, the data settings and digest, the fine-tuning settings and kdkit's version."""
        cfg = recipe.teacher
        key = digest({"model": cfg.model, "data": recipe.data.model_dump(), "digest": data.digest,
                      "finetune": cfg.finetune.model_dump(), "kdkit": __version__, "task": self.name})

        def build(work: Path) -> None:
            set_seed(cfg.finetune.seed)
            model, tokenizer = load_model(cfg.model, AutoModel, "teacher.model")
            prep = Prepared(recipe, data, tokenizer, tokenizer, None, model, module=None)  # what tokenize reads
            special = tokenizer.all_special_ids

            def forward(capture, batch):  # the teacher trains its own MaxSim scores
                scorer = MaxSimTeacher(lambda ids, mask: capture.model(input_ids=ids, attention_mask=mask
                                                                       ).last_hidden_state, special)
                queries = scorer.token_vectors(batch["input_ids"], batch["attention_mask"])
                passages = scorer.token_vectors(batch["passage_input_ids"], batch["passage_attention_mask"])
                return Representations(logits=maxsim(*queries, *passages))

            module = DistillationModule(model, build_terms([ContrastiveLoss(name="contrastive", scale=4.0)], None,
                                                           model), forward=forward)
            args = training_arguments(cfg.finetune, work / "checkpoints", save_strategy="no")
            trainer = DistillationTrainer(module, args, train_dataset=self.tokenize(prep)["train"],
                                          data_collator=self.collator(prep))
            trainer.train()
            trainer.export_student(work, tokenizer)

        return stored_teacher(f"{cfg.model}-maxsim", key, build,
                              f"fine-tuning the teacher '{cfg.model}' with in-batch negatives",
                              meta={"source": cfg.model, "key": key})

    # --- evaluation and export ---------------------------------------------------------------------------------
    def evaluate(self, prep):
        from kdkit.tasks.retrieval import evaluation

        return evaluation.evaluate_run(self, prep, out=prep.recipe.resolved_output_dir())

    def evaluate_saved(self, prep, out):
        """``kdkit eval --task retrieval``: no reference systems beside the saved model."""
        from kdkit.tasks.retrieval import evaluation

        return evaluation.evaluate_run(self, prep, out=out, references=False)

    def export(self, prep, trainer, folder):
        from kdkit.tasks.retrieval.export import save_sentence_transformer

        trainer.export_student(folder, prep.tokenizer)
        if trainer.args.should_save:
            save_sentence_transformer(folder, prep.student, max_seq_length=prep.recipe.data.max_length,
                                      similarity=prep.recipe.retrieval.similarity)
        return folder

    def teacher_vectors(self, prep: Prepared) -> TeacherCache:
        """The cache of the teacher's token vectors of the corpus and every query (built if missing, also when the
        recipe trains with ``teacher.cache: off``: evaluation reads the corpus from it)."""
        recipe = prep.recipe
        if recipe.teacher.cache == "off":
            recipe = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"cache": "auto"})})
        cache, reason = teacher_cache(self, replace(prep, recipe=recipe), None)
        if cache is None:
            raise ConfigError(f"the teacher's evaluation needs its token vectors cached: {reason}")
        return cache
