"""Disk cost of a teacher cache (:func:`kdkit.signals.cache.build_cache`): bytes per example for classification
logits and bytes per token for top-k logits of a causal LM.

Classification: the benchmark teacher (MiniLM-L6, fresh 2-label head) over Rotten Tomatoes train examples, dense
logits stored in float16 and in float32. Top-k: a tiny random ``LlamaForCausalLM`` with a 49,152-token vocabulary
(SmolLM's; only the vocabulary size matters for the cache) over random sequences, k = 32, fp16 values; the cache
contract expects 32·2 (values) + 32·2 (uint16 indices) + 2 (tail mass) = 130 bytes per token, plus per-example
keys and offsets. ``bytes_per_*`` divide every array file (headers, keys, offsets included) by the count;
``data_bytes_per_*`` count only the arrays with one row per example (classification) or per token (top-k).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from transformers import LlamaConfig, LlamaForCausalLM

from bench import common

LM_VOCAB = 49_152
TOP_K = 32
EXPECTED_TOPK_BYTES_PER_TOKEN = TOP_K * 2 + TOP_K * 2 + 2
# lookup structures, not signals: left out of data_bytes_per_*
BOOKKEEPING = ("keys.npy", "offsets.npy")


def tiny_causal_lm(vocab_size: int = LM_VOCAB) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def _measure(name: str, teacher, dataset: list[dict], collator, spec, tokenizer_fingerprint: str, rows: str,
             options: common.Options, batch_size: int) -> dict:
    """Build a cache in a temporary folder and describe its size per ``rows``: "example" (distinct examples) or
    "token" (real tokens of distinct examples)."""
    from kdkit.signals.cache import build_cache, example_key

    unique = {example_key(np.asarray(e["input_ids"])[np.asarray(e["attention_mask"], dtype=bool)]):
              int(sum(e["attention_mask"])) for e in dataset}
    count = len(unique) if rows == "example" else sum(unique.values())
    with tempfile.TemporaryDirectory(prefix="kdkit-bench-cache-") as tmp:
        start = time.perf_counter()
        cache = build_cache(Path(tmp) / name, teacher, dataset, collator, spec,
                            tokenizer_fingerprint=tokenizer_fingerprint, batch_size=batch_size,
                            device=options.device, progress=False)
        build_s = time.perf_counter() - start
        files, data_bytes = {}, 0
        for file in sorted(cache.path.glob("*.npy")):
            array = np.load(file, mmap_mode="r")
            files[file.name] = {"bytes": file.stat().st_size, "dtype": str(array.dtype), "shape": list(array.shape)}
            if file.name not in BOOKKEEPING and array.shape[0] == count:
                data_bytes += array.nbytes
        manifest_bytes = (cache.path / "manifest.json").stat().st_size
        counts = {"examples": len(dataset), "examples_stored": cache.num_examples}
        if rows == "token":
            counts["tokens"] = count
        return {"spec": spec.to_dict(), **counts, "bytes_total": cache.nbytes, "manifest_bytes": manifest_bytes,
                f"bytes_per_{rows}": cache.nbytes / count, f"data_bytes_per_{rows}": data_bytes / count,
                "build_s": build_s, "files": files}


def run(options: common.Options) -> common.Report:
    from kdkit.signals.cache import SignalSpec, fingerprint_tokenizer
    from kdkit.tasks.classification import DataCollator

    n_batches, n_sequences, (min_len, max_len) = (1, 12, (8, 16)) if options.quick else (32, 300, (16, 64))
    pair = common.classification_pair(options, n_batches=n_batches)
    classifier_fp = fingerprint_tokenizer(pair.tokenizer) if pair.tokenizer is not None else "random-token-ids"
    dataset = [{k: f[k] for k in ("input_ids", "attention_mask")} for f in pair.features]
    results = {}
    for dtype in ("float16", "float32"):
        results[f"classification_{dtype}"] = _measure(
            f"cls-{dtype}", pair.teacher, dataset, pair.collator, SignalSpec(logits="dense", dtype=dtype),
            classifier_fp, "example", options, batch_size=64)

    lm = tiny_causal_lm()
    sequences = common.random_features(n_sequences, LM_VOCAB, options.seed, min_len, max_len, num_labels=None)
    topk = _measure("topk", lm, sequences, DataCollator(pad_token_id=0),
                    SignalSpec(logits="topk", top_k=TOP_K, dtype="float16"), f"random-token-ids-{LM_VOCAB}",
                    "token", options, batch_size=8)
    topk.update({"vocab_size": LM_VOCAB, "k": TOP_K, "expected_bytes_per_token": EXPECTED_TOPK_BYTES_PER_TOKEN,
                 "dense_fp16_bytes_per_token": 2 * LM_VOCAB,
                 "reduction_vs_dense_fp16": 2 * LM_VOCAB / topk["bytes_per_token"]})
    results["topk"] = topk

    table = [{"cache": f"classification, dense {dtype}, 2 labels",
              "count": f"{results[f'classification_{dtype}']['examples']} examples",
              "bytes per unit": f"{results[f'classification_{dtype}']['bytes_per_example']:.1f} / example",
              "data bytes per unit": f"{results[f'classification_{dtype}']['data_bytes_per_example']:.1f} / example",
              "total bytes": results[f"classification_{dtype}"]["bytes_total"]} for dtype in ("float16", "float32")]
    table.append({"cache": f"causal LM, top-{TOP_K} fp16, vocab {LM_VOCAB:,}",
                  "count": f"{topk['tokens']} tokens in {topk['examples']} sequences",
                  "bytes per unit": f"{topk['bytes_per_token']:.1f} / token",
                  "data bytes per unit": f"{topk['data_bytes_per_token']:.1f} / token "
                                         f"(expected {EXPECTED_TOPK_BYTES_PER_TOKEN})",
                  "total bytes": topk["bytes_total"]})
    settings = {**pair.description, "classification_examples": len(dataset), "lm_sequences": n_sequences,
                "lm_sequence_lengths": [min_len, max_len], "lm": "tiny random LlamaForCausalLM", "top_k": TOP_K}
    notes = [f"Dense fp16 logits over the full vocabulary would take {2 * LM_VOCAB:,} bytes per token; top-{TOP_K} "
             f"takes {topk['bytes_per_token']:.1f} ({topk['reduction_vs_dense_fp16']:.0f}x less).",
             "Per-example overhead (16-byte key, 8-byte offset, .npy headers) is included in 'bytes per unit'; "
             "short sequences pay more of it per token."]
    return common.Report("storage", options, settings, results, table, notes)
