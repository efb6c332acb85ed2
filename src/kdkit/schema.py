"""The base of every typed configuration section, and the bounds its fields share.

Every section subclasses :class:`Strict`, so what it refuses reaches every field of every task's recipe (and the
comparison files) without a list of fields:

- unknown keys are refused, never ignored;
- no number is NaN or ±inf: float fields refuse them (``1e400`` in YAML is inf), and floats inside free-form values
  (``training.extra``, ``student.overrides``) are checked by the same validator;
- no string is longer than 4096 characters (a path's limit), and none is empty or blank: every string key names
  something (a file, a model, a column, a scheduler), and an empty one would resolve to the working directory or
  silently to a default;
- booleans and numbers never stand in for each other: pydantic's lax mode would read ``batch_size: true`` as 1 and
  ``t2_scaling: 1`` or ``"yes"`` as true; here both are refused. An integer written as a float (``32.0``) is read
  as 32; one with a fraction (``32.5``) is refused, never truncated.

The bounds below are far beyond anything a real run uses; they exist so that a typo (an extra exponent, a sign)
fails at the edge with the key's name instead of deep inside torch or numpy:

- ``Seed`` 0 … 2³² − 1: training.seed, data.seed, teacher.finetune.seed, compare seeds;
- ``BatchSize`` 1 … 2¹⁶: batch sizes, latency batch sizes, meta batch sizes, gradient accumulation;
- ``Count`` 1 … 2³¹ − 1: steps and limits (logging/save steps, top-k, ...);
- ``Epochs`` (0, 10⁴]; ``LearningRate`` (10⁻¹², 10]; ``Temperature`` [10⁻³, 10³];
- ``Weight`` [0, 10⁶]: loss weights and other non-negative factors; ``Fraction`` [0, 1): ratios, smoothing, decays;
- ``LayerIndex`` 0 … 4095: student.layers, layer pairs; ``data.max_length`` at most ``TOKENS_MAX`` (8192).

:func:`shorten` is how an error message shows a value the user gave: never more than a line; :func:`did_you_mean`
suggests the closest valid name.
"""

from __future__ import annotations

import difflib
import math
import reprlib
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are 32-bit
BATCH_MAX = 2**16
COUNT_MAX = 2**31 - 1  # an int32: the largest step or size any backend indexes with
EPOCHS_MAX = 1e4
LEARNING_RATE_MIN, LEARNING_RATE_MAX = 1e-12, 10.0  # below 1e-12 a float32 update vanishes
TEMPERATURE_MIN, TEMPERATURE_MAX = 1e-3, 1e3  # outside it softmax saturates to one-hot or uniform in float32
WEIGHT_MAX = 1e6
MAX_DEPTH = 32  # nesting of any recipe value (a recipe itself is 5 levels deep)
LAYER_MAX = 4095
STR_MAX = 4096  # any string: a path is at most 4096 bytes on Linux
TOKENS_MAX = 8192  # data.max_length: tokens a text is cut to

Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description=f"a seed, 0..{SEED_MAX}")]
BatchSize = Annotated[int, Field(gt=0, le=BATCH_MAX, description=f"examples per batch, 1..{BATCH_MAX}")]
Count = Annotated[int, Field(gt=0, le=COUNT_MAX, description=f"a positive count, 1..{COUNT_MAX}")]
Epochs = Annotated[float, Field(gt=0, le=EPOCHS_MAX, description=f"passes over the data, (0, {EPOCHS_MAX:g}]")]
LearningRate = Annotated[float, Field(gt=LEARNING_RATE_MIN, le=LEARNING_RATE_MAX,
                                      description=f"a learning rate, ({LEARNING_RATE_MIN:g}, {LEARNING_RATE_MAX:g}]")]
Temperature = Annotated[float, Field(ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX,
                                     description=f"a softmax temperature, [{TEMPERATURE_MIN:g}, {TEMPERATURE_MAX:g}]")]
Weight = Annotated[float, Field(ge=0, le=WEIGHT_MAX, description=f"a non-negative factor, [0, {WEIGHT_MAX:g}]")]
Fraction = Annotated[float, Field(ge=0, lt=1, description="a fraction, [0, 1)")]
LayerIndex = Annotated[int, Field(ge=0, le=LAYER_MAX, description=f"a layer index, 0..{LAYER_MAX}")]

SHOWN_MAX = 60


_REPR = reprlib.Repr()  # bounded by construction: a few items of a few levels, never the whole value
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 8, 8
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOWN_MAX


def shorten(value: Any, limit: int = SHOWN_MAX) -> str:
    """``value`` as an error message shows it: a string as it is (escaped if it holds a line break or another
    control character), anything else as a bounded ``repr`` (a few items
    of a few levels, so nested shared lists never expand), cut to ``limit`` characters with an ellipsis: a 10 MB
    key or value never becomes a 10 MB message."""
    try:  # a string with a line break or another control character is shown escaped: a message is one line
        text = (value if value.isprintable() else repr(value)) if isinstance(value, str) else _REPR.repr(value)
    except ValueError:  # an int of over 4300 digits has no repr
        text = f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(word: Any, names) -> str:
    """``"; did you mean 'x'?"`` with the name of ``names`` closest to ``word``, or ``""``; a word far longer than
    any name gets no suggestion (matching a 10 MB key against each name would take seconds)."""
    word = str(word)
    close = difflib.get_close_matches(word, list(names), n=1) if len(word) <= 200 else []
    return f"; did you mean '{close[0]}'?" if close else ""


class Strict(BaseModel):
    """Unknown keys refused; no NaN or ±inf; booleans and numbers kept apart (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False, str_max_length=STR_MAX)

    @model_validator(mode="before")
    @classmethod
    def _kinds(cls, data: Any) -> Any:
        # a model validator, not a field validator for "*": pydantic allows none on a union's discriminator field
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if name in data:
                    problem = kind_problem(field.annotation, data[name], (name,))
                    if problem is not None:
                        loc, message, value = problem
                        # raised as a ValidationError, pydantic prefixes the section's own place in the recipe
                        raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                            type=PydanticCustomError("kind", "{message}", {"message": message}), loc=loc,
                            input=value)])
        return data


Problem = tuple[tuple, str, Any]


def kind_problem(annotation: Any, value: Any, loc: tuple = (), depth: int = 0,
                 seen: set[int] | None = None) -> Problem | None:
    """``(loc, message, value)`` of the first place where ``value`` has a boolean given for a number, a
    non-boolean given for a boolean, an empty or blank string, or a non-finite float under ``Any``; ``None`` if
    there is none. Everything else (strings, literals, ranges, nested sections, which check their own fields) is
    left to pydantic.

    A container under ``Any`` is walked once however often it is referenced (``seen``), so nested shared lists
    (an alias bomb built in Python) cost their distinct objects, not their expansion."""
    if depth > MAX_DEPTH:
        return loc, f"is nested more than {MAX_DEPTH} levels deep", value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return kind_problem(args[0], value, loc, depth, seen)
    if annotation is Any:
        if isinstance(value, float) and not math.isfinite(value):
            return loc, "Input should be a finite number", value
        if not isinstance(value, (dict, list, tuple)):
            return None
        seen = set() if seen is None else seen
        if id(value) in seen:
            return None
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return _first(kind_problem(Any, item, (*loc, key), depth + 1, seen) for key, item in items)
    if annotation is bool:
        return None if isinstance(value, bool) else (loc, "Input should be true or false", value)
    if annotation is str:
        return (loc, "Input should not be empty or blank", value) if isinstance(value, str) and not value.strip() \
            else None
    if annotation in (int, float):
        return (loc, "Input should be a number, not true or false", value) if isinstance(value, bool) else None
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if value is None and len(members) < len(args):
            return None
        problems = [kind_problem(member, value, loc, depth, seen) for member in members]
        return None if any(p is None for p in problems) else problems[0]
    if origin in (list, set, frozenset) and args and isinstance(value, (list, tuple, set, frozenset)):
        return _first(kind_problem(args[0], item, (*loc, i), depth + 1, seen) for i, item in enumerate(value))
    if origin is tuple and args and isinstance(value, (list, tuple)):
        types_ = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        return _first(kind_problem(t, item, (*loc, i), depth + 1, seen)
                      for i, (t, item) in enumerate(zip(types_, value)))
    if origin is dict and args and isinstance(value, dict):
        return _first(kind_problem(args[1], item, (*loc, key), depth + 1, seen) for key, item in value.items())
    return None


def _first(problems) -> Problem | None:
    return next((p for p in problems if p is not None), None)
