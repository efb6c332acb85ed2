"""``student.init: config``: a randomly initialised student from a (smaller) config."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from kdkit.errors import ConfigError
from kdkit.students import StudentBuilder, StudentContext, register
from kdkit.students.layers import PER_LAYER_KEYS


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
        for key in PER_LAYER_KEYS:
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



@register
class FromConfig(StudentBuilder):
    """Random init from the config of ``student.model`` (default: the teacher's) with ``student.overrides``; the
    teacher's attention implementation is kept (eager when the recipe reads attention maps)."""

    name = "config"

    def check(self, cfg) -> None:
        if not cfg.overrides:
            raise ValueError("student.init 'config' needs student.overrides, e.g. {num_hidden_layers: 4}")

    def needs_teacher(self, cfg) -> bool:
        return not cfg.model

    def build(self, cfg, ctx: StudentContext) -> tuple[nn.Module, Any]:
        base = ctx.load_config(cfg.model, "student.model")[1] if cfg.model else ctx.teacher.config
        tokenizer = ctx.teacher_tokenizer if ctx.teacher_tokenizer is not None else \
            ctx.load_tokenizer(cfg.model, "student.model")
        return student_from_config(base, {**ctx.head, **cfg.overrides}, ctx.auto_class), tokenizer
