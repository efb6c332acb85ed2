"""Building students: a subset of a teacher's blocks (DistilBERT-style), a smaller random config, or a BiLSTM.

All return ordinary transformers models, so a student is saved with ``save_pretrained`` and loaded back with
``AutoModel*.from_pretrained`` without kdkit (the BiLSTM after ``import kdkit``, which registers it).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from kdkit.errors import ConfigError, ModelError

# Config entries holding one value per block; they follow the blocks when a student keeps a subset.
_PER_LAYER_KEYS = ("layer_types", "no_rope_layers")


def find_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The transformer block list of ``model``: (parent module, attribute name, the nn.ModuleList).

    It is the first nn.ModuleList whose length equals config.num_hidden_layers (bert.encoder.layer,
    distilbert.transformer.layer, model.layers, ...).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, PretrainedConfig):
        raise ModelError(f"{type(model).__name__} has no transformers config, so its blocks cannot be found")
    depth = config.get_text_config().num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            parent, _, attribute = name.rpartition(".")
            return model.get_submodule(parent), attribute, module
    raise ModelError(f"no nn.ModuleList of num_hidden_layers={depth} blocks in {type(model).__name__}")


def student_from_teacher_layers(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A student initialised from teacher blocks ``layers`` (Sanh et al. 2019, DistilBERT: every other layer).

    The teacher is deep-copied, so no parameter is shared and the teacher is unchanged. Embeddings, heads
    and the kept blocks (0-based, strictly increasing) keep their weights; config.num_hidden_layers and the
    per-layer config lists follow, and ``layer_idx`` attributes (KV-cache slots) are renumbered 0..len-1.
    """
    _, _, blocks = find_layers(teacher)
    layers = list(layers)
    valid = f"valid: strictly increasing indices in 0..{len(blocks) - 1}"
    if not layers:
        raise ModelError(f"student layers {layers} is empty; {valid}")
    for index in layers:
        if not isinstance(index, int) or not 0 <= index < len(blocks):
            raise ModelError(f"student layers {layers}: {index!r} is not a teacher block; {valid}")
    if any(a >= b for a, b in zip(layers, layers[1:])):
        raise ModelError(f"student layers {layers} are not strictly increasing; {valid}")

    student = copy.deepcopy(teacher)
    parent, attribute, blocks = find_layers(student)
    kept = nn.ModuleList(blocks[i] for i in layers)
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    setattr(parent, attribute, kept)

    config = student.config.get_text_config()
    for key in _PER_LAYER_KEYS:
        values = getattr(config, key, None)
        if isinstance(values, (list, tuple)) and len(values) == len(blocks):
            setattr(config, key, [values[i] for i in layers])
    config.num_hidden_layers = len(layers)
    return student


def student_from_config(
    base: PretrainedConfig, overrides: dict[str, Any], model_class: type[PreTrainedModel]
) -> PreTrainedModel:
    """A randomly initialised ``model_class`` from ``base`` with ``overrides`` (e.g. fewer layers, narrower).

    Keys may use the config's own names or the common aliases (num_hidden_layers for DistilBERT's n_layers).
    Values the config derives from the shape (head_dim, layer_types) are derived again for the new shape
    unless given. The attention implementation of ``base`` is kept.
    """
    aliases = type(base).attribute_map
    # num_labels is a property that sets id2label, not a dataclass field, but a natural key to override
    valid = {f.name for f in dataclasses.fields(base)} | set(aliases) | {"num_labels"}
    for key in overrides:
        if key not in valid:
            hint = difflib.get_close_matches(key, valid, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"student config key {key!r} is not a {type(base).__name__} field{suggestion}")
    changes = {aliases.get(key, key): value for key, value in overrides.items()}
    depth_key, width_key, heads_key = (
        aliases.get(key, key) for key in ("num_hidden_layers", "hidden_size", "num_attention_heads")
    )
    values = base.to_dict()
    if changes.get(depth_key, values[depth_key]) != values[depth_key]:
        for key in _PER_LAYER_KEYS:
            values.pop(key, None)
    reshaped = any(changes.get(k, values[k]) != values[k] for k in (width_key, heads_key))
    if reshaped and values.get("head_dim") == values[width_key] // values[heads_key]:
        values.pop("head_dim")
    if "num_labels" in changes and "id2label" not in changes:
        values.pop("id2label", None)  # a stale label map would contradict the new label count
        values.pop("label2id", None)
    values.update(changes)

    width, heads = values[width_key], values[heads_key]
    if width % heads:
        raise ConfigError(f"student hidden_size={width} does not divide by num_attention_heads={heads}")
    config = type(base)(**values, attn_implementation=base._attn_implementation)
    # Auto classes build through from_config; concrete model classes through their constructor
    return getattr(model_class, "from_config", model_class)(config)


# student.overrides keys of a BiLSTM student besides the BiLSTMConfig fields
_BILSTM_EMBEDDINGS = ("teacher", "random")


def student_bilstm(teacher: PreTrainedModel, overrides: dict[str, Any]) -> PreTrainedModel:
    """A :class:`~kdkit.models.BiLSTMForSequenceClassification` student over the teacher's vocabulary.

    ``overrides`` are BiLSTMConfig fields (hidden_size: both directions together, num_hidden_layers,
    embedding_size, dropout, pooling, classifier_hidden_size, num_labels, id2label, ...) plus ``embedding``:
    ``teacher`` (default) copies the teacher's input word embeddings (only the word embeddings: no position,
    token-type or normalisation); ``random`` initialises them. vocab_size and pad_token_id always follow the
    teacher, since the student reads the teacher's tokenizer. embedding_size defaults to the teacher's width; a
    smaller one with ``embedding: teacher`` keeps the teacher matrix's top principal directions (E·V_k from the
    SVD E = U S Vᵀ, the rank-k projection that keeps the most of E), a larger one is refused.
    """
    from kdkit.models import BiLSTMConfig, BiLSTMForSequenceClassification

    overrides = dict(overrides)
    embedding = overrides.pop("embedding", "teacher")
    if embedding not in _BILSTM_EMBEDDINGS:
        raise ConfigError(f"student.overrides.embedding {embedding!r} is not supported; valid: "
                          f"{', '.join(_BILSTM_EMBEDDINGS)}")
    valid = {f.name for f in dataclasses.fields(BiLSTMConfig)} | {"num_labels"}
    for key in overrides:
        if key not in valid or key in ("vocab_size", "pad_token_id"):
            hint = difflib.get_close_matches(key, valid, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"student.overrides key {key!r} is not a BiLSTM setting{suggestion} (valid: "
                              f"embedding, hidden_size, num_hidden_layers, embedding_size, dropout, pooling, "
                              f"classifier_hidden_size; vocab_size and pad_token_id follow the teacher)")
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
