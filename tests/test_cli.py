"""The CLI end to end on tiny random models (seconds), and its error contract: one line, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForSequenceClassification

from tiny import FILLER, NEGATIVE, POSITIVE, SPECIAL, make_tiny_teacher, run_cli, with_key, write_recipe


def test_distill_end_to_end_writes_student_report_and_recipe(tiny_recipe, tmp_path, capsys):
    tiny_recipe["losses"] += [{"name": "hidden_mse", "weight": 1.0}]
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe)
    code, out, err = run_cli(["distill", str(path), "--set", "training.max_steps=3"], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    assert report["student"]["params"] < report["teacher"]["params"]
    assert 0.0 <= report["student"]["metrics"]["accuracy"] <= 1.0
    assert set(report["student"]["latency"]) == {"1", "4"}
    assert "DM" in out or "dm" in out.lower()
    assert (run / "recipe.yaml").read_text().count("max_steps: 3") == 1
    student = AutoModelForSequenceClassification.from_pretrained(run / "student")
    assert student.config.num_hidden_layers == 2
    exported = set(student.state_dict())
    assert not any("projection" in k or k.startswith("terms.") for k in exported)
    assert any((run / "checkpoints").glob("checkpoint-*"))


def test_existing_output_dir_is_refused_then_resumed_or_overwritten(tiny_recipe, tmp_path, capsys):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe)
    assert run_cli(["distill", str(path)], capsys)[0] == 0
    code, _, err = run_cli(["distill", str(path)], capsys)
    assert code == 2 and "already holds a run" in err
    assert run_cli(["distill", str(path), "--overwrite"], capsys)[0] == 0
    longer = ["distill", str(path), "--resume", "--set", "training.max_steps=6"]
    code, _, err = run_cli(longer, capsys)
    assert code == 2 and "training.max_steps: 4 → 6" in err and "--force" in err
    code, _, err = run_cli(longer + ["--force"], capsys)
    assert code == 0, err
    assert "max_steps: 6" in (tmp_path / "run" / "recipe.yaml").read_text()
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-6").is_dir()


@pytest.mark.parametrize("key, value, expected", [
    ("losses.0", {"name": "hinton"}, "unknown loss 'hinton'"),
    ("training.epochs", "many", "training.epochs"),
    ("data.train_file", "/no/such/file.csv", "/no/such/file.csv"),
    ("teacher.model", "/no/such/model", "/no/such/model"),
    ("student.layers", [0, 9], "9"),
    ("losses.1", {"name": "hidden_mse", "layer_map": "pairs", "pairs": [[5, 1]]}, "5"),
    ("losses.1", {"name": "attention_kl", "layer_map": "pairs", "pairs": [[0, 0]]}, "embedding"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny_recipe, tmp_path, capsys, key, value, expected):
    path = write_recipe(tmp_path / "r.yaml", with_key(tiny_recipe, key, value))
    code, out, err = run_cli(["distill", str(path)], capsys)
    assert code == 2
    lines = err.strip().splitlines()  # progress bars of model loading may come before the error line
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, err
    assert "Traceback" not in err
    assert expected in lines[-1]
    assert not (tmp_path / "run").exists()


def test_token_losses_across_two_numberings_of_one_vocabulary(tiny_recipe, tmp_path, capsys):
    """The student numbers the teacher's word pieces differently: its ids are renumbered for the teacher, so
    hidden-state losses compare the same tokens (kdkit.vocab)."""
    words = POSITIVE + NEGATIVE + FILLER
    other = make_tiny_teacher(tmp_path / "other", layers=2, vocab=SPECIAL + words[::-1])
    tiny_recipe["student"] = {"init": "pretrained", "model": str(other)}
    tiny_recipe["losses"].append({"name": "hidden_mse", "layer_map": "pairs", "pairs": [[4, 2]]})
    code, out, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe))], capsys)
    assert code == 0, err
    assert "equals the teacher tokenizer's own in 100.0%" in out + err


def test_different_tokenizers_work_for_logit_losses(tiny_recipe, tmp_path, capsys):
    other = make_tiny_teacher(tmp_path / "other", layers=2,
                              vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"])
    tiny_recipe["student"] = {"init": "pretrained", "model": str(other)}
    code, _, err = run_cli(["distill", str(write_recipe(tmp_path / "r.yaml", tiny_recipe))], capsys)
    assert code == 0, err


def test_eval_and_info(tiny_teacher, tiny_csv, capsys, tmp_path):
    code, out, err = run_cli(["eval", str(tiny_teacher), "--train-file", str(tiny_csv), "--max-length", "16"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["params"] > 0 and 0 <= result["metrics"]["accuracy"] <= 1
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0
    for word in ("minilm-l6", "mpnet-base", "rotten_tomatoes", "bbc_news", "tweets", "kd", "emb_skip", "quickstart",
                 "smollm2-135m", "bbc_headlines    retrieval", "bbc_summaries    generation", "token_kd",
                 "emoji            multimodal: emoji images", "clothing_reviews multimodal"):
        assert word in out


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdkit.cli", "distill", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: recipe file '{tmp_path / 'nope.yaml'}' does not exist"
