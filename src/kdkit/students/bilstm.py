"""``student.init: bilstm``: a BiLSTM classifier over the teacher's tokenizer (cross-architecture students)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from kdkit.errors import ConfigError
from kdkit.schema import did_you_mean, shorten
from kdkit.students import StudentBuilder, StudentContext, register
from kdkit.students.config import check_override

_BILSTM_EMBEDDINGS = ("teacher", "random")  # student.overrides.embedding


def student_bilstm(teacher: PreTrainedModel, overrides: dict[str, Any]) -> PreTrainedModel:
    """A :class:`~kdkit.models.BiLSTMForSequenceClassification` student over the teacher's vocabulary.

    ``overrides`` are BiLSTMConfig fields (hidden_size: both directions together, num_hidden_layers,
    embedding_size, dropout, pooling, classifier_hidden_size, num_labels, id2label, ...) plus ``embedding``:
    ``teacher`` (default) copies the teacher's input word embeddings (only the word embeddings: no position,
    token-type or normalisation); ``random`` initialises them. vocab_size and pad_token_id always follow the
    teacher, since the student reads the teacher's tokenizer. embedding_size defaults to the teacher's width; a
    smaller one with ``embedding: teacher`` keeps the teacher matrix's top principal directions (E·V_k from the
    SVD E = U S Vᵀ, the rank-k projection that keeps the most of E), a larger one is refused. Sizes must be
    integers ≥ 1 (hidden_size also even) and dropout in [0, 1), each refused naming ``student.overrides.<key>``.
    """
    from kdkit.models import BiLSTMConfig, BiLSTMForSequenceClassification

    overrides = dict(overrides)
    embedding = overrides.pop("embedding", "teacher")
    if embedding not in _BILSTM_EMBEDDINGS:
        raise ConfigError(f"student.overrides.embedding '{shorten(embedding)}' is not supported; valid: "
                          f"{', '.join(_BILSTM_EMBEDDINGS)}")
    defaults = {f.name: None if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(BiLSTMConfig)} | {"num_labels": 2}
    for key, value in overrides.items():
        if key not in defaults or key in ("vocab_size", "pad_token_id"):
            raise ConfigError(f"student.overrides key '{shorten(key)}' is not a BiLSTM setting"
                              f"{did_you_mean(key, defaults)} (valid: "
                              f"embedding, hidden_size, num_hidden_layers, embedding_size, dropout, pooling, "
                              f"classifier_hidden_size; vocab_size and pad_token_id follow the teacher)")
        check_override(key, value, defaults[key])
    if overrides.get("hidden_size", 2) % 2:
        raise ConfigError(f"student.overrides.hidden_size: {overrides['hidden_size']} is odd; it is both directions "
                          f"together, so give an even number")
    source = teacher.get_input_embeddings().weight.detach()
    vocab_size, width = source.shape
    overrides.setdefault("embedding_size", width)
    if embedding == "teacher" and overrides["embedding_size"] > width:
        raise ConfigError(f"student.overrides.embedding_size {overrides['embedding_size']} is wider than the "
                          f"teacher's embeddings ({width}) copied by embedding: teacher; use at most {width} or "
                          f"embedding: random")
    try:
        config = BiLSTMConfig(vocab_size=vocab_size, pad_token_id=teacher.config.pad_token_id, **overrides)
    except Exception as err:  # strict dataclass validation: name the recipe key
        raise ConfigError(f"student.overrides for a BiLSTM student: {str(err).strip().splitlines()[-1].strip()}"
                          ) from None
    student = BiLSTMForSequenceClassification(config)
    if embedding == "teacher":
        weights = source.float()
        if config.embedding_size < width:
            weights = weights @ torch.linalg.svd(weights, full_matrices=False).Vh[: config.embedding_size].T
        with torch.no_grad():
            student.get_input_embeddings().weight.copy_(weights)
    return student


@register
class BiLSTM(StudentBuilder):
    """A :class:`~kdkit.models.BiLSTMForSequenceClassification` shaped by ``student.overrides``."""

    name = "bilstm"
    has_attention = False

    def check(self, cfg) -> None:
        if cfg.layers or cfg.model:
            raise ValueError("student.init 'bilstm' reads only student.overrides (e.g. {hidden_size: 256, "
                             "num_hidden_layers: 2, embedding: teacher}), not student.layers or student.model")

    def needs_teacher(self, cfg) -> bool:
        return True

    def build(self, cfg, ctx: StudentContext) -> tuple[nn.Module, Any]:
        return student_bilstm(ctx.teacher, {**ctx.head, **cfg.overrides}), ctx.teacher_tokenizer
