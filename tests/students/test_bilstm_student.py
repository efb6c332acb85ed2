"""BiLSTM students from a recipe: teacher embeddings, overrides, errors, and Universal-KD from BERT end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from kdkit.api import distill, evaluate
from kdkit.tasks.classification import load_classifier
from kdkit.config import load_recipe
from kdkit.tasks.classification import DataConfig
from kdkit.errors import ConfigError
from kdkit.models import BiLSTMForSequenceClassification
from kdkit.students import student_bilstm

BILSTM = {"init": "bilstm", "overrides": {"hidden_size": 16, "num_hidden_layers": 2, "embedding": "teacher"}}


@pytest.fixture(scope="module")
def teacher(tiny_teacher):
    return AutoModelForSequenceClassification.from_pretrained(tiny_teacher)


def test_teacher_embeddings_are_copied(teacher):
    student = student_bilstm(teacher, {"hidden_size": 16, "num_hidden_layers": 2})
    source = teacher.get_input_embeddings().weight
    assert student.config.vocab_size == source.shape[0] and student.config.embedding_size == source.shape[1]
    assert student.config.pad_token_id == teacher.config.pad_token_id
    torch.testing.assert_close(student.get_input_embeddings().weight, source)
    assert student.get_input_embeddings().weight.data_ptr() != source.data_ptr()  # a copy, not shared


def test_narrower_embeddings_keep_the_top_principal_directions(teacher):
    source = teacher.get_input_embeddings().weight.detach()
    student = student_bilstm(teacher, {"hidden_size": 16, "embedding_size": 8})
    weights = student.get_input_embeddings().weight.detach()
    assert weights.shape == (source.shape[0], 8)
    # E·V_k has the norms of the top-k singular values: nothing else of rank 8 keeps more of E
    singular = torch.linalg.svdvals(source)
    torch.testing.assert_close(torch.linalg.svdvals(weights), singular[:8], rtol=1e-4, atol=1e-5)


def test_random_embeddings_and_bad_overrides(teacher):
    student = student_bilstm(teacher, {"embedding": "random", "hidden_size": 8})
    assert not torch.equal(student.get_input_embeddings().weight[1:], teacher.get_input_embeddings().weight[1:])
    for overrides, fragment in [({"embedding": "glove"}, "valid: teacher, random"),
                                ({"hiden_size": 8}, "did you mean 'hidden_size'"),
                                ({"vocab_size": 8}, "follow the teacher"),
                                ({"embedding_size": 999}, "wider than the teacher"),
                                ({"hidden_size": 7}, "even")]:
        with pytest.raises(ConfigError, match=fragment):
            student_bilstm(teacher, overrides)


def test_recipe_refuses_attention_losses_and_stray_keys(tiny_recipe):
    tiny_recipe["student"] = BILSTM
    tiny_recipe["losses"].append({"name": "attention_kl"})
    with pytest.raises(ConfigError, match="bilstm. student .* has none"):
        load_recipe(tiny_recipe)
    tiny_recipe["losses"].pop()
    tiny_recipe["student"] = {**BILSTM, "layers": [0, 1]}
    with pytest.raises(ConfigError, match="reads only student.overrides"):
        load_recipe(tiny_recipe)


def test_universal_kd_from_bert_to_bilstm_end_to_end(tiny_recipe, tiny_csv):
    tiny_recipe["student"] = BILSTM
    tiny_recipe["losses"] += [{"name": "universal_kd", "weight": 1.0, "probe_epochs": 2, "pooling": "mean"},
                              {"name": "hidden_mse", "weight": 0.1, "layer_map": "uniform"}]
    report = distill(tiny_recipe)
    assert report["student"]["name"].endswith("(bilstm)") and 0 <= report["student"]["metrics"]["accuracy"] <= 1
    history = json.loads((Path(tiny_recipe["output_dir"]) / "metrics.json").read_text())
    assert all(math.isfinite(entry["loss_universal_kd"]) for entry in history if "loss_universal_kd" in entry)
    assert any("loss_universal_kd" in entry and "loss_hidden_mse" in entry for entry in history)
    student_dir = report["student_dir"]
    model = AutoModelForSequenceClassification.from_pretrained(student_dir)
    assert isinstance(model, BiLSTMForSequenceClassification) and model.config.num_hidden_layers == 2
    # only the BiLSTM's own parameters are exported: no probes, no hidden_mse projection
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {
        "embeddings", "embedding_projection", "layers", "pre_classifier", "classifier"}
    model, tokenizer = load_classifier(student_dir, ["neg", "pos"])
    assert tokenizer.pad_token_id == model.config.pad_token_id
    scores = evaluate(student_dir, DataConfig(train_file=str(tiny_csv), max_length=16))
    assert scores["metrics"]["accuracy"] == report["student"]["metrics"]["accuracy"]
