"""A new task in one file: token tagging (tag each word positive, negative or filler), built on the task interface.

Everything a task owns is here — its recipe's ``data`` section, data, models (teacher and student with a
token-classification head, built by the shared student builders), tokenisation, collator, metric and a loss of
its own (per-token KD over tagged positions) — and the shared pipeline does the rest: teacher cache, training on
``transformers.Trainer``, export, report, model card. Registered in a fixture, so the rest of the suite never
sees it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

import pytest
import torch
from datasets import Dataset, DatasetDict
from pydantic import Field
from transformers import AutoModelForTokenClassification

from kdkit import api, losses, tasks, terms
from kdkit.config import Recipe, parse_recipe
from kdkit.engine.pipeline import TrainerTask
from kdkit.errors import ConfigError
from kdkit.loading import load_model, load_tokenizer, model_config
from kdkit.report.evaluate import count_parameters, measure_latency
from kdkit.schema import TOKENS_MAX, Seed, Strict
from kdkit.students import StudentContext, build_student
from kdkit.terms import CacheRequest, LossConfig, Term
from tiny import FILLER, NEGATIVE, POSITIVE, make_tiny_teacher, run_cli

TAGS = ["filler", "negative", "positive"]


class TaggingData(Strict):
    # bounded like every field of a shipped recipe: the fuzzer below tries 2**70 examples
    examples: int = Field(96, gt=8, le=10_000)
    max_length: int = Field(16, gt=2, le=TOKENS_MAX)
    seed: Seed = 0


class TaggingRecipe(Recipe):
    task: str = "tagging"
    data: TaggingData


class TokenKDLoss(LossConfig):
    """Per-token KD on the tagged positions (labels ≠ −100)."""

    name: Literal["tag_kd"]
    temperature: float = Field(2.0, gt=0)


class TokenKDTerm(Term):
    """T²·KL(σ(z_t/T) ‖ σ(z_s/T)) per tagged token, mean over tagged tokens."""

    config = TokenKDLoss
    tasks = ("tagging",)
    unit = "token"

    def forward(self, student, teacher, batch):
        return losses.kl_divergence(student.logits, teacher.logits, self.cfg.temperature,
                                    mask=batch["labels"] != -100)

    def cache_request(self):
        return CacheRequest(logits=True)


def _pad(rows, value):
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row)
    return out


class TaggingTask(TrainerTask):
    name = "tagging"
    recipe = TaggingRecipe
    primary_metric = "token_accuracy"
    pipeline_tag = "token-classification"

    def load_data(self, recipe):
        rng = random.Random(recipe.data.seed)
        words = [(w, TAGS.index("positive")) for w in POSITIVE] + [(w, TAGS.index("negative")) for w in NEGATIVE] \
            + [(w, TAGS.index("filler")) for w in FILLER]
        rows = [rng.sample(words, rng.randint(2, 6)) for _ in range(recipe.data.examples)]
        split = {"train": rows[:-16], "validation": rows[-16:-8], "test": rows[-8:]}
        return DatasetDict({name: Dataset.from_dict({"words": [[w for w, _ in r] for r in part],
                                                     "tags": [[t for _, t in r] for r in part]})
                            for name, part in split.items()})

    def load_teacher(self, recipe, data, path):
        return load_model(path, AutoModelForTokenClassification, "teacher.model", num_labels=len(TAGS))

    def build_student(self, recipe, data, teacher, teacher_tokenizer):
        ctx = StudentContext(teacher=teacher, teacher_tokenizer=teacher_tokenizer,
                             auto_class=AutoModelForTokenClassification, head={"num_labels": len(TAGS)},
                             load_pretrained=lambda name, key: load_model(name, AutoModelForTokenClassification, key,
                                                                          num_labels=len(TAGS)),
                             load_config=model_config, load_tokenizer=load_tokenizer)
        return build_student(recipe.student, ctx)

    def tokenize(self, prep):
        tokenizer, max_length = prep.tokenizer, prep.recipe.data.max_length

        def encode(batch):
            encoded = tokenizer(batch["words"], is_split_into_words=True, truncation=True, max_length=max_length)
            labels = [[-100 if w is None else tags[w] for w in encoded.word_ids(i)]
                      for i, tags in enumerate(batch["tags"])]
            return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}

        return prep.data.map(encode, batched=True, remove_columns=["words", "tags"])

    def collator(self, prep):
        pad = prep.tokenizer.pad_token_id
        return lambda rows: {"input_ids": _pad([r["input_ids"] for r in rows], pad),
                             "attention_mask": _pad([r["attention_mask"] for r in rows], 0),
                             "labels": _pad([r["labels"] for r in rows], -100)}

    def num_outputs(self, prep):
        return len(TAGS)

    def evaluate(self, prep):
        split = self.tokenize(prep)[prep.recipe.evaluation.split]
        batch = self.collator(prep)([split[i] for i in range(len(split))])
        tagged = batch["labels"] != -100
        entries = {}
        for role, model in (("teacher", prep.teacher), ("student", prep.student)):
            model.eval()
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                correct = (model(**inputs).logits.argmax(-1) == batch["labels"])[tagged]
            entries[role] = {"name": role, "params": count_parameters(model), "n": int(tagged.sum()),
                             "metrics": {"token_accuracy": correct.float().mean().item()},
                             "latency": {"8": measure_latency(model, inputs, repeats=1, warmup=0)}}
        return {"split": prep.recipe.evaluation.split, "dm_alpha": prep.recipe.evaluation.dm_alpha, **entries}


@pytest.fixture
def tagging(monkeypatch):
    """The task and its loss registered for one test only."""
    monkeypatch.setitem(tasks.TASKS, "tagging", TaggingTask())
    terms.register("tag_kd")(TokenKDTerm)
    yield
    del terms.TERMS["tag_kd"], terms.CONFIGS["tag_kd"]


def _recipe(tmp_path: Path) -> dict:
    teacher = make_tiny_teacher(tmp_path / "teacher", num_labels=len(TAGS))
    return {"task": "tagging", "name": "tags", "data": {"examples": 64},
            "teacher": {"model": str(teacher)}, "student": {"init": "teacher_layers", "layers": [0, 2]},
            "losses": [{"name": "ce", "weight": 0.5}, {"name": "tag_kd", "weight": 0.5}],
            "training": {"max_steps": 3, "batch_size": 8, "logging_steps": 1, "save_steps": 3, "report_to": []},
            "output_dir": str(tmp_path / "run")}


def test_a_new_task_runs_end_to_end_through_the_shared_pipeline(tagging, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "cache"))  # its own teacher cache, built here
    recipe = _recipe(tmp_path)
    report = api.distill(recipe)
    assert report["task"] == "tagging" and report["primary_metric"] == "token_accuracy"
    assert 0.0 <= report["student"]["metrics"]["token_accuracy"] <= 1.0
    assert report["student"]["params"] < report["teacher"]["params"]
    assert "caching teacher signals (dense logits" in capsys.readouterr().out  # its own loss asked for logits
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert any("loss_tag_kd" in entry for entry in history)
    assert "token_accuracy (%)" in (tmp_path / "run" / "report.md").read_text()
    card = (tmp_path / "run" / "student" / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card
    exported = AutoModelForTokenClassification.from_pretrained(tmp_path / "run" / "student")
    assert exported.config.num_hidden_layers == 2 and exported.config.num_labels == 3


def test_a_task_accepts_only_the_losses_registered_for_it(tagging, tmp_path):
    recipe = _recipe(tmp_path)
    recipe["losses"] = [{"name": "universal_kd"}]  # classification only
    with pytest.raises(ConfigError, match="unknown loss 'universal_kd'; valid: .*tag_kd"):
        parse_recipe(recipe)
    recipe["losses"] = [{"name": "tag_kd", "temperature": 0}]
    with pytest.raises(ConfigError, match=r"recipe key 'losses\[0\].temperature'"):
        parse_recipe(recipe)
    recipe["data"] = {"examples": 64, "max_len": 3}
    recipe["losses"] = [{"name": "ce"}]
    with pytest.raises(ConfigError, match="recipe key 'data.max_len' is unknown; valid keys: examples, max_length"):
        parse_recipe(recipe)


def test_kdkit_info_lists_the_new_task_and_an_unknown_task_is_one_line(tagging, tmp_path, capsys):
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0 and "tagging" in out and "primary metric token_accuracy" in out
    recipe = dict(_recipe(tmp_path), task="parsing")
    with pytest.raises(ConfigError, match="recipe key 'task': 'parsing' is not a task; valid: classification"):
        parse_recipe(recipe)


def test_the_schema_fuzzer_covers_a_new_task_and_its_loss_without_a_list(tagging, tmp_path, monkeypatch):
    """``tests/fuzz.py`` derives the keys from the task's typed recipe: the tagging task's own data keys and its
    own loss's keys are generated and each bad value is refused (exit 2, one line naming the key, nothing
    written)."""
    import fuzz

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    base = _recipe(tmp_path)
    cases = fuzz.recipe_cases(fuzz.recipe_model("tagging"), base)
    labels = {case.key.label for case in cases}
    assert {"data.examples", "data.max_length", "losses.2[tag_kd].temperature"} <= labels, sorted(labels)[:20]
    failures = fuzz.sweep(tmp_path, cases, lambda case, folder: fuzz.run_recipe_case(case, base, folder))
    assert not failures, "\n".join(failures)
