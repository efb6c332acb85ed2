"""``student.init: config``: a randomly initialised student from a (smaller) config."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from kdkit.errors import ConfigError
from kdkit.schema import did_you_mean, shorten
from kdkit.students import StudentBuilder, StudentContext, register
from kdkit.students.layers import PER_LAYER_KEYS

SIZE_MAX = 2**24  # larger than any width, depth, vocabulary or position count of a real model
# sizes and counts, which a model needs at least one of: num_*/n_* counts, *_size, *_dim, *_layers, *_heads, ...
_SIZE = re.compile(r"^(num_|n_)|(_size|_dim|_layers|_heads|_embeddings)$|^(dim|hidden_dim|n_embd|d_model)$")
_DROPOUT = re.compile(r"dropout")


def check_override(key: str, value: Any, base_value: Any = None) -> None:
    """Refuse ``student.overrides.<key>: value`` that no model can have, naming the key: a size or count (by its
    name) that is not an integer in 1..``SIZE_MAX``, a dropout probability outside [0, 1), or a value of
    another kind than the config's own (a boolean for a number, a number for a boolean, a float for an integer).
    ``base_value`` is the config's own value (None: unset, any kind)."""
    where = f"student.overrides.{shorten(key)}: {shorten(value)}"
    number = type(value) in (int, float) and math.isfinite(value)
    if base_value is None and value is None:
        return
    if _SIZE.search(key) and type(base_value) in (int, type(None)):
        if not (type(value) is int and 1 <= value <= SIZE_MAX):
            raise ConfigError(f"{where} is not a size a model can have; give an integer in 1..{SIZE_MAX}")
    elif _DROPOUT.search(key) and type(base_value) in (int, float, type(None)):
        if not (number and 0 <= value < 1):  # at 1 every unit is dropped: nothing is learned
            raise ConfigError(f"{where} is not a dropout probability; give a number in [0, 1)")
    elif type(base_value) is bool and type(value) is not bool:
        raise ConfigError(f"{where} is not true or false, which the config's {shorten(key)} is")
    elif type(base_value) in (int, float) and value is not None and not (number and type(value) in (
            (int,) if type(base_value) is int else (int, float))):
        kind = "an integer" if type(base_value) is int else "a number"
        raise ConfigError(f"{where} is not {kind}, which the config's {shorten(key)} is")


def student_from_config(
    base: PretrainedConfig, overrides: dict[str, Any], model_class: type[PreTrainedModel], *,
    tokens: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised ``model_class`` from ``base`` with ``overrides`` (e.g. fewer layers, narrower).

    Keys may use the config's own names or the common aliases (num_hidden_layers for DistilBERT's n_layers).
    Values the config derives from the shape (head_dim, layer_types) are derived again for the new shape
    unless given. The attention implementation of ``base`` is kept. Overrides no model can have are refused
    before anything is built (:func:`check_override`; heads dividing the width, key/value heads dividing the
    heads, ``vocab_size`` holding the ``tokens`` of the tokenizer the student reads and its pad token).
    """
    aliases = type(base).attribute_map
    # num_labels is a property that sets id2label, not a dataclass field, but a natural key to override
    valid = {f.name for f in dataclasses.fields(base)} | set(aliases) | {"num_labels"}
    values = base.to_dict()
    for key, value in overrides.items():
        if key not in valid:
            raise ConfigError(f"student.overrides key '{shorten(key)}' is not a {type(base).__name__} field"
                              f"{did_you_mean(key, valid)}")
        check_override(key, value, base.num_labels if key == "num_labels" else values.get(aliases.get(key, key)))
    changes = {aliases.get(key, key): value for key, value in overrides.items()}
    depth_key, width_key, heads_key = (
        aliases.get(key, key) for key in ("num_hidden_layers", "hidden_size", "num_attention_heads")
    )
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
        raise ConfigError(f"student.overrides: hidden_size={width} does not divide by num_attention_heads={heads}")
    kv_heads = values.get("num_key_value_heads")
    if isinstance(kv_heads, int) and heads % kv_heads:
        raise ConfigError(f"student.overrides: num_attention_heads={heads} does not divide by "
                          f"num_key_value_heads={kv_heads}")
    vocab, pad = values.get("vocab_size"), values.get("pad_token_id")
    if "vocab_size" in changes and tokens is not None and vocab < tokens:
        raise ConfigError(f"student.overrides.vocab_size: {vocab} is smaller than the student's tokenizer "
                          f"({tokens} tokens); use at least {tokens}")
    if changes.keys() & {"vocab_size", "pad_token_id"} and isinstance(vocab, int) and isinstance(pad, int) \
            and not 0 <= pad < vocab:
        raise ConfigError(f"student.overrides: pad_token_id={pad} is not a token of vocab_size={vocab}")
    try:
        config = type(base)(**values, attn_implementation=base._attn_implementation)
    except (TypeError, ValueError, StrictDataclassError) as err:  # the config's own validation: name the section
        raise ConfigError(f"student.overrides for a {type(base).__name__}: "
                          f"{shorten(str(err).strip().splitlines()[-1].strip(), 200)}") from None
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
        return student_from_config(base, {**ctx.head, **cfg.overrides}, ctx.auto_class,
                                   tokens=len(tokenizer)), tokenizer
