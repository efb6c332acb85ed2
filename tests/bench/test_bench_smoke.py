"""Every benchmark runs in quick mode on tiny random models and writes a JSON with its fields and sane numbers."""

from __future__ import annotations

import importlib.util
import json

import pytest

from bench import BENCHMARKS
from bench.__main__ import main

MACHINE_FIELDS = {"cpu", "cores", "torch_threads", "torch", "transformers", "gpu"}


def _run(name: str, tmp_path) -> dict:
    written = main([name, "--quick", "--tiny", "--out", str(tmp_path), "--device", "cpu"])
    assert written[name] == tmp_path / f"{name}.json"
    markdown = (tmp_path / f"{name}.md").read_text()
    assert "smoke run" in markdown and "| --- |" in markdown
    payload = json.loads(written[name].read_text())
    assert payload["benchmark"] == name
    assert payload["mode"] == {"quick": True, "tiny": True, "device": "cpu"}
    assert MACHINE_FIELDS <= set(payload["machine"])
    assert payload["machine"]["cores"] > 0 and payload["machine"]["torch_threads"] > 0
    return payload["results"]


def test_registry_names_importable_modules():
    for module in BENCHMARKS.values():
        assert importlib.util.find_spec(module) is not None


def test_overhead(tmp_path):
    results = _run("overhead", tmp_path)
    for key in ("kdkit_step_s", "hand_step_s", "ratio", "ratio_pooled", "ratio_min", "ratio_max"):
        assert results[key] > 0, key
    assert results["ratio_min"] <= results["ratio"] <= results["ratio_max"]
    assert len(results["repetitions"]) == 2
    assert {r["order"] for r in results["repetitions"]} == {"kdkit-hand", "hand-kdkit"}
    assert all(len(r["kdkit_times_s"]) == len(r["hand_times_s"]) == 2 for r in results["repetitions"])
    # same models, batches, seed and math on both sides: the trained students agree
    assert results["max_param_diff"] < 1e-5
    assert results["threads"]["kdkit"] == results["threads"]["hand"]


def test_inference(tmp_path):
    results = _run("inference", tmp_path)
    assert results["params"]["teacher"] > results["params"]["student"] > 0
    assert set(results["batches"]) == {"1", "32"}
    for entry in results["batches"].values():
        for key in ("teacher_s", "student_s", "speedup", "teacher_flops", "student_flops", "flop_ratio",
                    "speedup_over_flop_ratio"):
            assert entry[key] > 0, key
        # the tiny student keeps 2 of the teacher's 4 blocks, so it does about half the work
        assert 1.8 < entry["flop_ratio"] < 2.1


@pytest.mark.skipif(importlib.util.find_spec("kdkit.signals.cache") is None,
                    reason="kdkit.signals.cache (the teacher cache) is not in this checkout")
def test_storage(tmp_path):
    results = _run("storage", tmp_path)
    for dtype, size in (("float16", 2), ("float32", 4)):
        entry = results[f"classification_{dtype}"]
        assert entry["examples_stored"] == entry["examples"] == 32
        assert entry["data_bytes_per_example"] == 2 * size  # 2 labels
        assert entry["bytes_per_example"] > entry["data_bytes_per_example"]
    topk = results["topk"]
    assert topk["vocab_size"] == 49_152 and topk["k"] == 32
    assert topk["data_bytes_per_token"] == topk["expected_bytes_per_token"] == 130
    assert topk["bytes_per_token"] > 130
    assert topk["reduction_vs_dense_fp16"] > 500


def test_cache(tmp_path):
    results = _run("cache", tmp_path)
    assert set(results["epoch_s"]) == {"student_only", "live", "cached"}
    assert all(v > 0 for v in results["epoch_s"].values())
    assert results["cache_build_s"] > 0 and results["cache_bytes"] > 0
    assert len(results["repetitions"]) == 2


def test_retrieval_cache(tmp_path):
    results = _run("retrieval_cache", tmp_path)
    assert results["step_s"]["cached"] > 0 and results["step_s"]["live"] > 0 and results["live_over_cached"] > 0
    assert results["cache_texts"] == 120 and results["cache_bytes"] > 0  # 60 passages and 60 queries
    assert len(results["repetitions"]) == 2


def test_gkd(tmp_path):
    pytest.importorskip("trl", reason="TRL is installed for this benchmark only")
    results = _run("gkd", tmp_path)
    assert set(results["step_s"]) == {"kdkit_live", "kdkit_cached", "trl"}
    assert all(value > 0 for value in results["tokens_per_s"].values())
    assert results["loss_difference"] < 1e-4  # kdkit's token_kd JSD and TRL's agree on the same batch
    assert results["cache"]["bytes_per_completion_token"] > 0


def test_augment(tmp_path):
    results = _run("augment", tmp_path)
    assert results["augmented"] == results["copies"] * results["texts"]
    assert 0 < results["cached_examples"] <= results["augmented"]
    for key in ("augmented_per_s", "labelled_per_s", "produced_and_labelled_per_s", "cache_bytes_per_example"):
        assert results[key] > 0, key
    assert results["produced_and_labelled_per_s"] < results["augmented_per_s"]
