"""Universal-KD end to end: teacher probes fitted before distillation, cached teacher pooled states of all layers,
student probes trained and checkpointed but never exported, and a non-transformer (BiLSTM) student."""

from __future__ import annotations

import json
import math

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kdkit.api import distill
from kdkit.terms.logits import KDLoss
from kdkit.terms.universal import UniversalKDLoss
from kdkit.engine import DistillationModule
from kdkit.terms.universal import fit_probes
from kdkit.terms import SetupContext, build_term, signal_spec
from kdkit.terms.logits import CELoss, CETerm, KDTerm
from kdkit.terms.universal import UniversalKDTerm
from kdkit.losses import ProbeSet
from kdkit.signals import LiveTeacher
from kdkit.tasks.classification import DataCollator

UKD = {"name": "universal_kd", "weight": 1.0, "temperature": 1.0, "probe_epochs": 2}


def test_fit_probes_learns_separable_labels():
    torch.manual_seed(0)
    labels = torch.arange(64) % 2
    states = [torch.randn(64, 6) + 3 * labels[:, None].float(), torch.randn(64, 4)]
    probes = ProbeSet([6, 4], num_classes=2)
    fit_probes(probes, states, labels, epochs=30, lr=0.05)
    with torch.no_grad():
        accuracy = (probes(states)[:, 0].argmax(-1) == labels).float().mean()
    assert accuracy > 0.9


def test_distill_fits_teacher_probes_and_exports_no_probe(tiny_recipe, tmp_path, capsys):
    tiny_recipe["losses"].append(UKD)
    tiny_recipe["training"].update(max_steps=2, logging_steps=1, save_steps=2)
    distill(tiny_recipe)
    out = capsys.readouterr().out
    assert "fitted 4 teacher probes" in out
    assert "pooled [1, 2, 3, 4]" in out, "the teacher cache stores the pooled state of every teacher block"

    run = tmp_path / "run"
    logged = [h for h in json.loads((run / "metrics.json").read_text()) if "loss" in h]
    assert logged and all(math.isfinite(h["loss_universal_kd"]) and h["loss_universal_kd"] > 0 for h in logged)

    checkpoint = load_file(run / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert any("student_probes" in k for k in checkpoint) and any("teacher_probes" in k for k in checkpoint)
    exported = load_file(run / "student" / "model.safetensors")
    assert not any("probe" in k for k in exported)
    assert AutoModelForSequenceClassification.from_pretrained(run / "student").config.num_hidden_layers == 2

    # a second run reads the fitted probes back instead of fitting again
    distill(tiny_recipe, overwrite=True)
    assert "fitted" not in capsys.readouterr().out


class BiLSTM(nn.Module):
    """A two-layer BiLSTM classifier over the teacher's token ids, embeddings copied from the teacher."""

    def __init__(self, teacher_embeddings: torch.Tensor, hidden: int = 8, num_labels: int = 2):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(teacher_embeddings.clone(), freeze=False)
        self.project = nn.Linear(teacher_embeddings.shape[1], 12)
        self.layers = nn.ModuleList([nn.LSTM(12, hidden, batch_first=True, bidirectional=True),
                                     nn.LSTM(2 * hidden, hidden, batch_first=True, bidirectional=True)])
        self.head = nn.Linear(2 * hidden, num_labels)

    def forward(self, input_ids, attention_mask=None):
        x = self.project(self.embed(input_ids))
        for lstm in self.layers:
            x, _ = lstm(x)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        m = mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * m).sum(1) / m.sum(1).clamp(min=1))


def test_bilstm_student_learns_from_hooked_layers(tiny_teacher, tmp_path):
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_teacher)
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    texts = ["good fun movie", "awful boring plot", "great superb film", "bad dull movie was"] * 4
    examples = [{**tokenizer(t), "labels": i % 2} for i, t in enumerate(texts)]
    examples = [{k: e[k] for k in ("input_ids", "attention_mask", "labels")} for e in examples]
    collator = DataCollator(tokenizer.pad_token_id)

    student = BiLSTM(teacher.bert.embeddings.word_embeddings.weight.detach())
    cfg = UniversalKDLoss(name="universal_kd", pooling="mean", probe_epochs=2,
                          student_modules=["layers.0", "layers.1"])
    term = build_term(cfg, teacher, student)
    assert isinstance(term, UniversalKDTerm)
    assert [p.in_features for p in term.student_probes.probes] == [16, 16]
    spec, _ = signal_spec([term], num_classes=2)
    assert spec.pooled_layers == (1, 2, 3, 4) and spec.pooling == "mean"
    term.setup(SetupContext(teacher, examples, collator))
    assert not any(p.requires_grad for p in term.teacher_probes.parameters())

    module = DistillationModule(student, [CETerm(CELoss(name="ce", weight=0.5)), KDTerm(KDLoss(name="kd")), term])
    live = LiveTeacher(teacher, **module.teacher_needs().capture_kwargs())
    batch = collator(examples[:8])
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    values = []
    for _ in range(15):
        total, parts, _ = module(batch, live(batch))
        optimizer.zero_grad()
        total.backward()
        if not values:
            assert student.layers[0].weight_ih_l0.grad.abs().sum() > 0
            assert all(p.grad is not None for p in term.student_probes.parameters())
        optimizer.step()
        values.append(parts["universal_kd"].item())
    assert all(math.isfinite(v) for v in values) and values[-1] < values[0]
    assert not any("probe" in k for k in student.state_dict())
