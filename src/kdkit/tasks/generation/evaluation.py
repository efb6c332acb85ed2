"""Evaluation of the generation task: ROUGE of greedy completions, perplexity of the references, generation speed.

For the teacher and the student on ``evaluation.split`` (at most ``data.max_eval_samples`` examples):

- **ROUGE-1/2/L**: F-measures of ``rouge-score`` (Lin 2004; Porter stemming, its default English tokenisation)
  between each greedy completion (at most ``generation.max_new_tokens`` tokens, cut at EOS, decoded without special
  tokens, stripped) and its reference, averaged over examples; ``rougeL`` is the primary metric.
- **perplexity**: exp of the mean negative log-likelihood of the reference completion tokens (EOS included, as
  tokenised for training), teacher forcing; lower is better.
- with ``generation.score: likelihood`` (language-modelling text such as ``bbc_text``) nothing is generated for
  scoring: the primary metric is **token_accuracy**, per example the share of reference completion tokens that are
  the model's top-1 next token under teacher forcing, averaged over examples, beside perplexity.
- **speed**: the median wall-clock time to generate exactly ``max_new_tokens`` tokens (greedy, KV cache, EOS
  ignored) for the first b prompts, for each b of ``evaluation.latency_batch_sizes``, ``generation.speed_repeats``
  times after one warm-up; tokens/s = b · max_new_tokens / median.
- **samples**: the first ``generation.samples`` examples with the reference and both models' completions.

Per-example ROUGE values go to ``per_query.json`` (``{role: {metric: {example index: value}}}``, as retrieval's), so
:func:`kdkit.report.bootstrap.bootstrap_runs` gives paired bootstrap intervals between runs. The teacher's scores and
completions are computed once per (teacher weights, split, settings) and read back from the artifact store.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from kdkit.capture import num_layers
from kdkit.errors import DataError
from kdkit.progress import progress
from kdkit.report.bootstrap import PER_QUERY
from kdkit.report.evaluate import count_parameters
from kdkit.signals.cache import fingerprint_model, fingerprint_tokenizer
from kdkit.store import ArtifactStore, digest
from kdkit.tasks.generation.batches import (Encoder, GenerationCollator, decoder_start_of, ended, generated_tokens,
                                            model_inputs, pad_token_id)
from kdkit.tasks.generation.data import Example

ROUGE = ("rouge1", "rouge2", "rougeL")


def _device(model) -> torch.device:
    return next(model.parameters()).device


def left_padded(prompts: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[i, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def greedy_completions(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 16,
                       desc: str = "generating") -> list[list[int]]:
    """Greedy completions of ``prompts`` (token ids), each cut after its first EOS; batches in length order."""
    pad, eos = pad_token_id(tokenizer), tokenizer.eos_token_id
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for start in progress(range(0, len(order), batch_size), desc=desc, unit="batch"):
            rows = order[start:start + batch_size]
            ids, mask = left_padded([prompts[i] for i in rows], pad, _device(model))
            generated = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
            for i, row in zip(rows, generated_tokens(model, generated, ids.shape[1]).tolist()):
                out[i] = ended(row, eos)
    finally:
        model.train(was_training)
    return out


def decode(tokenizer, completions: list[list[int]]) -> list[str]:
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in completions]


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F-measures (``rouge-score``, stemming on)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE), use_stemmer=True)
    values: dict[str, list[float]] = {name: [] for name in ROUGE}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)
        for name in ROUGE:
            values[name].append(scores[name].fmeasure)
    return values


@torch.inference_mode()
def token_scores(model, rows: dict[str, list], pad: int, batch_size: int = 16) -> dict[str, list]:
    """Per example of ``rows`` (:meth:`Encoder.rows` columns), under teacher forcing: the summed negative
    log-likelihood of its completion tokens (``nll``), their number (``tokens``) and how many are the model's top-1
    next token (``correct``)."""
    collate = GenerationCollator(pad, decoder_start_of(model))
    out: dict[str, list] = {"nll": [], "tokens": [], "correct": []}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows["prompt"]), batch_size):
            part = slice(start, start + batch_size)
            batch = collate([{"prompt": p, "completion": c} for p, c in zip(rows["prompt"][part],
                                                                            rows["completion"][part])])
            batch = {k: v.to(_device(model)) for k, v in batch.items()}
            logits = model(**model_inputs(batch)).logits.float()
            labels = batch["labels"]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                    reduction="none")
            mask = labels != -100
            out["nll"] += nll.sum(-1).tolist()
            out["tokens"] += mask.sum(-1).tolist()
            out["correct"] += ((logits.argmax(-1) == labels) & mask).sum(-1).tolist()
    finally:
        model.train(was_training)
    return out


def perplexity_of(scores: dict[str, list]) -> float:
    """exp(mean NLL) of the completion tokens that :func:`token_scores` scored."""
    return math.exp(sum(scores["nll"]) / max(sum(scores["tokens"]), 1))


@torch.inference_mode()
def generation_speed(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_sizes: list[int],
                     repeats: int) -> dict[str, dict]:
    """Median and p90 seconds to generate exactly ``max_new_tokens`` tokens for the first b prompts, per b, and
    tokens/s at the median."""
    pad = pad_token_id(tokenizer)
    result = {}
    was_training = model.training
    model.eval()
    try:
        for size in batch_sizes:
            ids, mask = left_padded(prompts[:size], pad, _device(model))
            times = []
            for i in range(repeats + 1):
                start = time.perf_counter()
                model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                               min_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
                if i:  # the first call is a warm-up
                    times.append(time.perf_counter() - start)
            median, p90 = np.quantile(times, [0.5, 0.9])
            result[str(size)] = {"median_s": float(median), "p90_s": float(p90),
                                 "tokens_per_s": float(ids.shape[0] * max_new_tokens / median)}
    finally:
        model.train(was_training)
    return result


def _scores(model, tokenizer, examples: list[Example], encoder: Encoder, recipe) -> dict:
    """What a model's evaluation computes from its weights alone (stored for the teacher): completions and
    per-example ROUGE (``generation.score: rouge``) or per-example token accuracy (``likelihood``), perplexity."""
    rows = encoder.rows(examples)
    tokens = token_scores(model, rows, pad_token_id(tokenizer), recipe.training.eval_batch_size)
    if recipe.generation.score == "likelihood":
        return {"completions": [], "per_example": {"token_accuracy": [
            c / max(n, 1) for c, n in zip(tokens["correct"], tokens["tokens"])]}, "perplexity": perplexity_of(tokens)}
    completions = greedy_completions(model, tokenizer, rows["prompt"], recipe.generation.max_new_tokens,
                                     recipe.training.eval_batch_size)
    texts = decode(tokenizer, completions)
    per_example = rouge_scores(texts, [e.completion.strip() for e in examples])
    return {"completions": texts, "per_example": per_example, "perplexity": perplexity_of(tokens)}


def _entry(name: str, model, tokenizer, examples, encoder, recipe, scores: dict) -> dict:
    prompts = encoder.rows(examples[:max(recipe.evaluation.latency_batch_sizes)])["prompt"]
    latency = generation_speed(model, tokenizer, prompts, recipe.generation.max_new_tokens,
                               [b for b in recipe.evaluation.latency_batch_sizes if b <= len(examples)],
                               recipe.generation.speed_repeats)
    metrics = {name_: float(np.mean(values)) for name_, values in scores["per_example"].items()}
    return {"name": name, "params": count_parameters(model), "n": len(examples),
            "metrics": {**metrics, "perplexity": scores["perplexity"]}, "latency": latency,
            "tokens_per_s": {b: v["tokens_per_s"] for b, v in latency.items()}}


def teacher_scores(prep, examples: list[Example], encoder: Encoder) -> tuple[dict, bool]:
    """The teacher's scores, from the artifact store when this teacher was evaluated on these examples before."""
    recipe = prep.recipe
    key = digest({"teacher": fingerprint_model(prep.teacher),
                  "tokenizer": fingerprint_tokenizer(prep.teacher_tokenizer),
                  "examples": hashlib.sha256(json.dumps([[e.prompt, e.completion] for e in examples]).encode()
                                             ).hexdigest(),
                  "data": recipe.data.model_dump(include={"max_prompt_length", "prompt_tail",
                                                          "max_completion_length"}),
                  "max_new_tokens": recipe.generation.max_new_tokens, "task": "generation",
                  **({"score": "likelihood"} if recipe.generation.score == "likelihood" else {})})
    store = ArtifactStore()
    found = store.get_json("evaluations", key)
    if found is not None:
        return found, True
    scores = _scores(prep.teacher, prep.teacher_tokenizer, examples, encoder, recipe)
    store.put_json("evaluations", key, scores)
    return scores, False


def evaluate_run(prep, out: Path | None) -> dict:
    """The report's results of a generation run (see :mod:`kdkit.report.results`), with the sample table."""
    recipe = prep.recipe
    split = recipe.evaluation.split
    examples = prep.data[split]
    if not examples:
        raise DataError(f"the {split} split has no examples to evaluate; give data with a {split} split")
    entries, per_example, completions = {}, {}, {}
    if prep.teacher is not None:
        enc = model_encoder(recipe, prep.teacher_tokenizer, prep.teacher)
        scores, cached = teacher_scores(prep, examples, enc)
        name = recipe.teacher.model + (" (fine-tuned)" if recipe.teacher.finetune else "")
        entries["teacher"] = {**_entry(name, prep.teacher, prep.teacher_tokenizer, examples, enc, recipe, scores),
                              **({"cached": True} if cached else {})}
        per_example["teacher"], completions["teacher"] = scores["per_example"], scores["completions"]
    name = f"{num_layers(prep.student)}-layer student ({recipe.student.init})"
    entries["student"], scores = student_entry(prep, prep.student, name)
    per_example["student"], completions["student"] = scores["per_example"], scores["completions"]
    likelihood = recipe.generation.score == "likelihood"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / PER_QUERY).write_text(json.dumps({role: {metric: dict(enumerate(values)) for metric, values in
                                                        metrics.items()} for role, metrics in per_example.items()})
                                     + "\n")
    if out is not None and not likelihood:
        (out / "completions.jsonl").write_text("".join(
            json.dumps({"prompt": _text(e.prompt), "reference": e.completion.strip(),
                        **{role: texts[i] for role, texts in completions.items()}}) + "\n"
            for i, e in enumerate(examples)))
    samples = [{"prompt": _text(e.prompt), "reference": e.completion.strip(),
                **{role: texts[i] for role, texts in completions.items()}}
               for i, e in enumerate(examples[:0 if likelihood else recipe.generation.samples])]
    return {"split": split, "dm_alpha": recipe.evaluation.dm_alpha, **entries, "samples": samples,
            **({"primary_metric": "token_accuracy"} if likelihood else {}),
            "max_new_tokens": recipe.generation.max_new_tokens,
            "latency_unit": f"generating {recipe.generation.max_new_tokens} tokens (greedy) for b prompts",
            "torch_threads": torch.get_num_threads()}


def student_entry(prep, model, name: str) -> tuple[dict, dict]:
    """A student's report entry (scores and speed on the evaluation split) and its scores: the trained student, or
    one of its ``evaluation.before`` / ``evaluation.int8`` variants."""
    examples = prep.data[prep.recipe.evaluation.split]
    enc = model_encoder(prep.recipe, prep.tokenizer, model)
    scores = _scores(model, prep.tokenizer, examples, enc, prep.recipe)
    return _entry(name, model, prep.tokenizer, examples, enc, prep.recipe, scores), scores


def model_encoder(recipe, tokenizer, model) -> Encoder:
    """The recipe's :class:`Encoder` for ``model`` (its tokenizer; the encoder-decoder rows for one)."""
    cfg = recipe.data
    return Encoder(tokenizer, cfg.max_prompt_length, cfg.prompt_tail, cfg.max_completion_length,
                   seq2seq=model.config.is_encoder_decoder)


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(f"{role}: {content}" for role, content in prompt)


def teacher_completions(task, prep, examples: list[Example]) -> list[Example]:
    """``examples`` with the teacher's greedy completions in place of the references (sequence-level KD), generated
    once per (teacher, prompts, settings) and stored."""
    recipe = prep.recipe
    enc = model_encoder(recipe, prep.teacher_tokenizer, prep.teacher)
    key = digest({"teacher": fingerprint_model(prep.teacher),
                  "prompts": hashlib.sha256(json.dumps([e.prompt for e in examples]).encode()).hexdigest(),
                  "data": recipe.data.model_dump(include={"max_prompt_length", "prompt_tail"}),
                  "max_new_tokens": recipe.data.max_completion_length - 1, "task": "sequence_kd"})
    store = ArtifactStore()
    texts = store.get_json("generations", key)
    if texts is None:
        completions = greedy_completions(prep.teacher, prep.teacher_tokenizer, enc.rows(examples)["prompt"],
                                         recipe.data.max_completion_length - 1, recipe.training.eval_batch_size,
                                         desc="teacher completions (sequence-level KD)")
        # decoded as generated (a leading space kept), so re-tokenising gives back about the same tokens
        texts = [prep.teacher_tokenizer.decode(ids, skip_special_tokens=True) for ids in completions]
        store.put_json("generations", key, texts)
    return [Example(e.prompt, text) for e, text in zip(examples, texts)]
