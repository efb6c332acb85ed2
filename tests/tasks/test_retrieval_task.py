"""The retrieval task end to end on tiny random models: TCT-ColBERT through the shared pipeline, the cached
teacher's scores against the live teacher's, batches, the sentence-transformers export, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdkit import api
from kdkit.config import parse_recipe
from kdkit.errors import ConfigError
from kdkit.tasks import get_task
from kdkit.tasks.retrieval.task import RetrievalCollator, encode
from tiny import make_tiny_pairs, make_tiny_teacher, run_cli, write_recipe


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval")
    return {"teacher": make_tiny_teacher(root / "teacher"), "pairs": make_tiny_pairs(root / "pairs.jsonl")}


def _recipe(files, tmp_path: Path, **changes) -> dict:
    recipe = {"task": "retrieval", "name": "tiny-tct",
              "data": {"train_file": str(files["pairs"]), "max_length": 24, "query_max_length": 8},
              "teacher": {"model": str(files["teacher"])}, "student": {"init": "teacher_layers", "layers": [0, 2]},
              "losses": [{"name": "tct"}],
              "training": {"max_steps": 3, "batch_size": 8, "logging_steps": 1, "save_steps": 3, "report_to": []},
              "evaluation": {"latency_repeats": 2}, "output_dir": str(tmp_path / "run")}
    recipe.update(changes)
    return recipe


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))


def test_tct_runs_end_to_end_and_the_student_loads_in_sentence_transformers(files, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    report = api.distill(_recipe(files, tmp_path))
    assert report["task"] == "retrieval" and report["primary_metric"] == "mrr@10"
    for role in ("teacher", "student"):
        metrics = report[role]["metrics"]
        assert set(metrics) == {"mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100"}
        assert all(0 <= v <= 1 for v in metrics.values())
        assert report[role]["index_mb"] > 0 and report[role]["latency"]["1"]["median_s"] > 0
    assert report["student"]["n"] == 6 and report["corpus"] == 60  # 10% of the 60 queries, every passage
    # the student's index is one vector per passage; the teacher's a vector per token
    assert report["student"]["index_mb"] < report["teacher"]["index_mb"]
    out = capsys.readouterr().out
    assert "caching teacher signals (no logits, hidden [4]" in out
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert any("loss_tct" in entry for entry in history)
    per_query = json.loads((tmp_path / "run" / "per_query.json").read_text())
    assert len(per_query["student"]["mrr@10"]) == 6
    assert sum(per_query["student"]["mrr@10"].values()) / 6 == pytest.approx(report["student"]["metrics"]["mrr@10"])
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "index (MB)" in markdown and "| reference: BM25 | 0.00 |" in markdown
    assert set(report["references"]) == {"BM25"}  # a teacher_layers student has no pretrained model to compare

    folder = tmp_path / "run" / "student"
    model = SentenceTransformer(str(folder), device="cpu")
    texts = ["good movie plot", "the film was really quite dull and the plot was awful", "fun"]
    ours = _kdkit_vectors(folder, texts, "dot")
    theirs = model.encode(texts, convert_to_tensor=True)
    assert torch.allclose(ours, theirs.cpu(), atol=1e-5)
    assert model.similarity_fn_name == "dot" and model.max_seq_length == 24


def _kdkit_vectors(folder: Path, texts: list[str], similarity: str) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.inference_mode():
        return encode(model, batch["input_ids"], batch["attention_mask"], similarity)


def test_a_cosine_student_exports_with_normalize(files, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from kdkit.tasks.retrieval.export import save_sentence_transformer

    folder = tmp_path / "st"
    AutoModel.from_pretrained(files["teacher"]).save_pretrained(folder)
    AutoTokenizer.from_pretrained(files["teacher"]).save_pretrained(folder)
    model = AutoModel.from_pretrained(folder)
    save_sentence_transformer(folder, model, max_seq_length=24, similarity="cosine")
    loaded = SentenceTransformer(str(folder), device="cpu")
    texts = ["good plot", "the movie was boring"]
    vectors = loaded.encode(texts, convert_to_tensor=True).cpu()
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(vectors, _kdkit_vectors(folder, texts, "cosine"), atol=1e-5)
    assert loaded.similarity_fn_name == "cosine"


def test_batches_hold_every_passage_of_the_batch_and_the_gold_column(files, tmp_path):
    task = get_task("retrieval")
    prep = task.prepare(parse_recipe(_recipe(files, tmp_path)))
    train = task.tokenize(prep)["train"]
    assert {"query", "positive", "negative"} <= set(train.column_names)  # a BM25 negative was mined per query
    batch = task.collator(prep)([train[i] for i in range(5)])
    assert batch["input_ids"].shape[0] == 5 and batch["passage_input_ids"].shape[0] == 10
    assert batch["labels"].tolist() == [0, 1, 2, 3, 4]
    assert batch["passage_input_ids"][2, :len(train[2]["positive"])].tolist() == train[2]["positive"]
    assert batch["passage_input_ids"][7, :len(train[2]["negative"])].tolist() == train[2]["negative"]
    student = prep.module.student_forward(batch)
    assert student.logits.shape == (5, 10)
    # padding does not change a score: the same query and passages, padded further, score the same
    padded = {k: torch.nn.functional.pad(v, (0, 3)) if v.dim() == 2 else v for k, v in batch.items()}
    with torch.no_grad():
        assert torch.allclose(prep.module.student_forward(padded).logits, student.logits.detach(), atol=1e-4)


def test_the_cached_teacher_scores_a_batch_as_the_live_teacher_does(files, tmp_path):
    from kdkit.engine.pipeline import teacher_cache

    task = get_task("retrieval")
    prep = task.prepare(parse_recipe(_recipe(files, tmp_path)))
    train = task.tokenize(prep)["train"]
    batch = task.collator(prep)([train[i] for i in range(8)])
    cache, _ = teacher_cache(task, prep, train)
    cached, live = task.signal_source(prep, cache)(batch), task.signal_source(prep, None)(batch)
    assert cached.logits.shape == live.logits.shape == (8, 16)
    assert torch.allclose(cached.logits, live.logits, atol=2e-2)  # fp16 token vectors
    assert not torch.allclose(live.logits, live.logits[:, torch.randperm(16)])


def test_a_teacher_free_contrastive_run_reports_the_student_alone(files, tmp_path):
    recipe = _recipe(files, tmp_path, losses=[{"name": "contrastive", "scale": 5}],
                     student={"init": "pretrained", "model": str(files["teacher"])})
    recipe.pop("teacher")
    report = api.distill(recipe)
    assert "teacher" not in report and report["student"]["metrics"]["mrr@10"] >= 0
    assert set(report["references"]) == {"BM25", "zero-shot student (dot)"}  # the pretrained model before training


@pytest.mark.parametrize("lines, message", [
    (['{"query": "good plot"}'], "line 1, field 'positive' is missing"),
    (['{"query": "good plot", "positive": "  "}'], "line 1, field 'positive'"),
    (['{"query": "good plot", "positive": "the plot", "negatives": "bad"}'], "field 'negatives'"),
])
def test_bad_pairs_are_one_line_and_exit_2(files, tmp_path, capsys, lines, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    recipe = _recipe(files, tmp_path)
    recipe["data"] = {**recipe["data"], "train_file": str(bad)}
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", recipe))], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_qrels_id_missing_from_the_corpus_is_one_line(files, tmp_path, capsys):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "good plot"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "plot"}\n')
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    recipe = _recipe(files, tmp_path)
    recipe["data"] = {"dataset": str(folder)}
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", recipe))], capsys)
    assert code == 2 and "'d9' is not an _id of corpus.jsonl" in err and len(err.strip().splitlines()) == 1


def test_margin_mse_needs_negatives_and_retrieval_takes_only_its_own_losses(files, tmp_path):
    recipe = _recipe(files, tmp_path, losses=[{"name": "margin_mse"}])
    recipe["data"] = {**recipe["data"], "negatives": "none"}
    with pytest.raises(ConfigError, match="recipe key 'data.negatives': loss 'margin_mse'"):
        parse_recipe(recipe)
    with pytest.raises(ConfigError, match="unknown loss 'kd'; valid: tct, margin_mse, contrastive"):
        parse_recipe(_recipe(files, tmp_path, losses=[{"name": "kd"}]))


def test_the_collator_puts_negatives_after_all_positives():
    rows = [{"query": [2, 5], "positive": [2, 6, 3], "negative": [2, 7, 3]},
            {"query": [2, 8, 9], "positive": [2, 10, 3], "negative": [2, 11, 12, 3]}]
    batch = RetrievalCollator(pad_token_id=0)(rows)
    assert batch["passage_input_ids"].tolist() == [[2, 6, 3, 0], [2, 10, 3, 0], [2, 7, 3, 0], [2, 11, 12, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["labels"].tolist() == [0, 1]


def test_kdkit_eval_scores_a_saved_bi_encoder_beside_a_maxsim_teacher(files, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = run_cli(["eval", str(files["teacher"]), "--task", "retrieval", "--train-file",
                                 str(files["pairs"]), "--max-length", "24", "--teacher", str(files["teacher"]),
                                 "--output-dir", str(out)], capsys)
    assert code == 0, err
    assert "| teacher: " in stdout and "MaxSim" in stdout and "| student: " in stdout and "index (MB)" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["primary_metric"] == "mrr@10" and report["student"]["n"] == 6
    assert set(json.loads((out / "per_query.json").read_text())) == {"teacher", "student"}
    code, _, err = run_cli(["eval", str(files["teacher"]), "--task", "retrieval", "--train-file", str(files["pairs"]),
                            "--label-column", "y"], capsys)
    assert code == 2 and "--text-column and --label-column are classification options" in err
    code, _, err = run_cli(["eval", str(files["teacher"]), "--task", "ranking"], capsys)
    assert code == 2 and "--task 'ranking'" in err and len(err.strip().splitlines()) == 1


def test_a_fine_tuned_maxsim_teacher_is_trained_once_and_stored(files, tmp_path, capsys):
    finetune = {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3, "report_to": []}
    recipe = _recipe(files, tmp_path, teacher={"model": str(files["teacher"]), "finetune": finetune})
    report = api.distill(recipe)
    assert "fine-tuning the teacher" in capsys.readouterr().out
    stored = Path(report["teacher_source"])
    assert stored.is_dir() and (stored / "config.json").is_file() and "(fine-tuned) MaxSim" in report["teacher"]["name"]
    from transformers import AutoModel

    before, after = AutoModel.from_pretrained(files["teacher"]), AutoModel.from_pretrained(stored)
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    recipe["output_dir"] = str(tmp_path / "again")
    api.distill(recipe)
    assert "fine-tuned teacher found in cache" in capsys.readouterr().out


def test_a_teacher_with_its_own_vocabulary_reads_its_own_token_ids(files, tmp_path):
    from tiny import FILLER, NEGATIVE, POSITIVE, SPECIAL

    other = make_tiny_teacher(tmp_path / "other-teacher", vocab=SPECIAL + FILLER[::-1] + NEGATIVE + POSITIVE)
    recipe = _recipe(files, tmp_path, teacher={"model": str(other)},
                     student={"init": "pretrained", "model": str(files["teacher"])})
    task = get_task("retrieval")
    prep = task.prepare(parse_recipe(recipe))
    train = task.tokenize(prep)["train"]
    assert {"teacher_query", "teacher_positive", "teacher_negative"} <= set(train.column_names)
    assert train[0]["teacher_query"] != train[0]["query"]  # the same words, other ids
    batch = task.collator(prep)([train[i] for i in range(4)])
    scores = task.signal_source(prep, None)(batch).logits
    own = task.signal_source(prep, None)({"input_ids": batch["teacher_input_ids"],
                                          "attention_mask": batch["teacher_attention_mask"],
                                          "passage_input_ids": batch["teacher_passage_input_ids"],
                                          "passage_attention_mask": batch["teacher_passage_attention_mask"]}).logits
    assert scores.shape == (4, 8) and torch.allclose(scores, own)
    assert api.distill(recipe)["teacher"]["metrics"]["mrr@10"] >= 0


def test_kdkit_cache_builds_the_teacher_token_vectors_of_corpus_and_queries(files, tmp_path):
    built = api.cache(_recipe(files, tmp_path))
    assert built["examples"] == 120 and list(built["spec"]["hidden_layers"]) == [4]  # 60 passages and 60 queries
    assert api.cache(_recipe(files, tmp_path))["path"] == built["path"]  # found, not built again
    assert not (tmp_path / "run").exists()


def test_a_retrieval_run_resumes_from_its_checkpoint_to_the_weights_of_an_uninterrupted_run(files, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file

    recipe = _recipe(files, tmp_path, training={"max_steps": 4, "batch_size": 8, "save_steps": 2, "report_to": []})
    api.distill(recipe)
    run = tmp_path / "run"
    uninterrupted = load_file(run / "student" / "model.safetensors")
    # as if killed after checkpoint-2: the last checkpoint and everything written after it are gone
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    shutil.rmtree(run / "student")
    api.distill(recipe, resume=True)
    assert "resuming from" in capsys.readouterr().out and "checkpoint-2" in str(sorted((run / "checkpoints").iterdir()))
    resumed = load_file(run / "student" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in resumed)
