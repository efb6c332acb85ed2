"""RW-KD in the engine: the meta split, the term's meta step, λ logging, checkpoints and exact resume, on the
tiny models through ``kdkit.api.distill``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from kdkit.api import distill
from tiny import classification, prepare, tokenized as _tokenized
from kdkit.capture import Representations
from kdkit.config import parse_recipe
from kdkit.terms.reweighting import RWKDLoss
from kdkit.terms import signal_spec
from kdkit.terms.reweighting import RWKDTerm
from kdkit.errors import ConfigError

RWKD = {"name": "rwkd", "temperature": 2.0, "meta_fraction": 0.25, "meta_batch_size": 4}


def _recipe(tiny_recipe: dict, **loss) -> dict:
    tiny_recipe["losses"] = [{**RWKD, **loss}]
    return tiny_recipe


def test_meta_split_is_carved_from_train_only_and_deterministic(tiny_recipe):
    prep = prepare(parse_recipe(_recipe(tiny_recipe)))
    splits = _tokenized(prep)
    n = len(splits["train"])
    splits["train"] = splits["train"].add_column("row", list(range(n)))
    others = {name: splits[name] for name in splits if name != "train"}
    classification().setup_terms(prep, splits)
    term = prep.module.terms[0]
    meta = term._meta[0]
    train_rows, meta_rows = set(splits["train"]["row"]), set(meta["row"])
    assert not train_rows & meta_rows and train_rows | meta_rows == set(range(n))
    assert len(meta_rows) == round(0.25 * n)
    assert all(splits[name] is split for name, split in others.items())  # validation and test untouched
    assert term.virtual_lr == tiny_recipe["training"].get("learning_rate", 5e-5)
    again = _tokenized(prep)
    again["train"] = again["train"].add_column("row", list(range(n)))
    classification().setup_terms(prep, again)
    assert set(prep.module.terms[0]._meta[0]["row"]) == meta_rows  # fixed by data.seed


def test_term_reads_only_teacher_logits_and_needs_meta_data():
    cfg = RWKDLoss(name="rwkd")
    term = RWKDTerm(cfg, None, torch.nn.Linear(2, 2))
    spec, reason = signal_spec([term], num_classes=2)
    assert spec is not None and spec.logits == "dense" and not spec.hidden_layers, reason
    assert not any(p.requires_grad for p in term.parameters())  # never in the training optimiser
    with pytest.raises(ConfigError, match="setup"):
        term._meta_step(None, None, {"labels": torch.zeros(1)}, 0)


def _weights(path) -> dict:
    return load_file(str(path / "model.safetensors"))


def test_distill_rwkd_logs_lambda_trains_meta_net_and_resumes_exactly(tiny_recipe, tmp_path):
    recipe = _recipe(tiny_recipe)
    recipe["training"].update(max_steps=4, logging_steps=2, save_steps=2, save_total_limit=5)
    distill(recipe)
    out = tmp_path / "run"
    logs = [e for e in json.loads((out / "metrics.json").read_text()) if "loss" in e]
    assert len(logs) == 2
    for entry in logs:
        assert 0 <= entry["rwkd_lambda_min"] <= entry["rwkd_lambda_mean"] <= entry["rwkd_lambda_max"] <= 1
        assert entry["rwkd_lambda_std"] >= 0 and "loss_rwkd" in entry
    assert logs[-1]["rwkd_lambda_std"] > 0  # λ differs between samples once the meta network has moved
    final = _weights(out / "checkpoints" / "checkpoint-4")
    assert final["terms.0.meta_net.out.weight"].abs().sum() > 0  # moved from zero
    assert int(final["terms.0.meta_adam.steps"]) == 4 and int(final["terms.0.batches"]) == 4
    exported = _weights(out / "student")
    assert not any("meta" in k for k in exported)
    optimiser = torch.load(out / "checkpoints" / "checkpoint-4" / "optimizer.pt", weights_only=False)
    in_optimiser = sum(len(g["params"]) for g in optimiser["param_groups"])
    assert in_optimiser == sum(1 for k in exported if "position_ids" not in k)  # the student's parameters only

    # resume from checkpoint-2 in a copy: the same meta batches, meta-net steps and student weights
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "checkpoints" / "checkpoint-4")
    distill({**recipe, "output_dir": str(copy)}, resume=True)
    resumed = _weights(copy / "checkpoints" / "checkpoint-4")
    assert resumed.keys() == final.keys()
    for key in final:
        assert torch.equal(resumed[key], final[key]), key


class _Student(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(6, 3)

    def forward(self, input_ids, attention_mask):
        return self.embed(input_ids).mean(1)


def test_l2rw_term_meta_steps_every_other_batch_and_not_in_eval():
    torch.manual_seed(0)
    student = _Student()
    term = RWKDTerm(RWKDLoss(name="rwkd", variant="l2rw", meta_every=2), None, student)
    meta = [{"input_ids": [i % 6, (i + 1) % 6], "attention_mask": [1, 1], "labels": i % 3} for i in range(6)]

    def collate(rows):
        return {k: torch.tensor([r[k] for r in rows]) for k in ("input_ids", "attention_mask", "labels")}

    term.set_meta_data(meta, collate, batch_size=4, seed=0, learning_rate=0.5)
    batch = collate([{"input_ids": [i, 5 - i], "attention_mask": [1, 1], "labels": i % 3} for i in range(4)])
    teacher = Representations(logits=torch.randn(4, 3) * 3)
    logged = []
    for _ in range(2):
        s = Representations(logits=student(batch["input_ids"], batch["attention_mask"]))
        loss = term(s, teacher, batch)
        loss.backward()
        logged.append(term.extra_logs())
    assert int(term.batches) == 2 and student.embed.weight.grad is not None
    assert logged[1] == {"rwkd_lambda_mean": 0.5, "rwkd_lambda_std": 0.0, "rwkd_lambda_min": 0.5,
                         "rwkd_lambda_max": 0.5}  # batch 1 has no meta step
    assert logged[0]["rwkd_lambda_std"] > 0 and 0 <= logged[0]["rwkd_lambda_min"] <= logged[0]["rwkd_lambda_max"] <= 1
    term.eval()
    term(s, teacher, batch)
    assert int(term.batches) == 2 and term.extra_logs() == {}  # evaluation: no meta step, nothing logged
