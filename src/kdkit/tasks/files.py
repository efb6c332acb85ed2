"""Reading a task's data files with one-line errors naming the file, the 1-based line and the field, and carving
the splits a source lacks from its training examples.

Shared by every task: opening a file (:func:`read_text`), jsonl lines (:func:`jsonl_objects`,
:func:`json_objects`), the checks on a text value, and seeded carving. Labelled csv/tsv/jsonl/json tables
(classification, multimodal) are read by :mod:`kdkit.tasks.tables`; what is particular to one task's format
(retrieval's BEIR qrels) stays in that task's ``data.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from kdkit.errors import DataError

SPLITS = ("train", "validation", "test")
Item = TypeVar("Item")


def cut(text: str, width: int = 60) -> str:
    """``text`` shortened to ``width`` characters: a value from a file (a 10 MB cell) never floods an error line."""
    return text if len(text) <= width else text[:width - 1] + "…"


def json_kind(value: Any) -> str:
    """How an error names the kind of a JSON value that is not the expected one."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", list: "a list"}.get(type(value), "a number")


def jsonl_objects(content: str, name: str, example: str) -> Iterator[tuple[int, str, dict]]:
    """``(line number, line, object)`` for each non-blank line of a jsonl file's ``content``, refusing a line that
    is not one JSON object (broken JSON, ``null``, ``3``, an array) naming ``name`` and the line; ``example`` shows
    what a line should be."""
    for number, line in enumerate(content.split("\n"), 1):  # not splitlines: U+2028 may sit inside a JSON string
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{name}, line {number} cannot be parsed as jsonl: {err.msg} (column {err.colno})"
                            ) from None
        except RecursionError:
            raise DataError(f"{name}, line {number} cannot be parsed as jsonl: nested too deeply") from None
        if not isinstance(value, dict):
            shown = "" if value is None else f" ({cut(line.strip(), 40)})"
            raise DataError(f"{name}, line {number} is {json_kind(value)}, not an object{shown}; each line must be "
                            f"one object such as {example}")
        yield number, line, value


def is_null(value: Any) -> bool:
    """None, pandas' NA or a float NaN: how a missing value arrives from json, csv or a DataFrame."""
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def text_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable text (missing, not a string, blank), or None when it is one."""
    if is_null(value):
        return "is empty or null"
    if not isinstance(value, str):
        return "is not a string"
    return None if value.strip() else "is empty or only whitespace"


def required_text(value: Any, at: str, key: str) -> str:
    """``value`` when it is a non-blank string; else a one-line error at ``at`` (see :func:`where`) naming field
    ``key``."""
    problem = text_problem(value)
    if problem:
        raise DataError(f"{at}, field '{key}': {cut(repr(value))} {problem}; it must be a non-blank text")
    return value


def least(fraction: float) -> int:
    """The fewest examples of one label from which ``round(n * fraction)`` (as :func:`carve` takes) is one."""
    n = max(1, math.floor(0.5 / fraction))
    while round(n * fraction) < 1:
        n += 1
    return n


def where(path: Path, line: int) -> str:
    """How an error names a line of a data file."""
    return f"data file '{path}', line {line}"


def read_text(path: Path, expect: str = "a .jsonl file", empty: str = "") -> str:
    """The file's text (UTF-8, an initial byte-order mark dropped: spreadsheet exports often start with one); a
    directory (``expect`` says what to give instead), a missing or empty file (``empty`` adds why that matters) or
    a non-UTF-8 file is refused, the last naming the line and column of the first undecodable byte."""
    if path.is_dir():
        raise DataError(f"data file '{path}' is a directory; give {expect}")
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file '{path}' is empty{empty}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{where(path, line)} is not UTF-8 (byte {raw[err.start:err.start + 1]!r} at column "
                        f"{column}); re-save the file as UTF-8") from None


def json_objects(path: Path, example: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a jsonl file, refusing a line that is not one JSON
    object; ``example`` shows what a line should be."""
    for number, _, value in jsonl_objects(read_text(path), f"data file '{path}'", example):
        yield number, value


def field(obj: dict, key: str, at: str, example: str) -> Any:
    """``obj[key]``, or a one-line error at ``at`` (see :func:`where`) saying the field is missing."""
    if key not in obj:
        raise DataError(f"{at}, field '{key}' is missing; each line must be one object such as {example}")
    return obj[key]


def carve(items: Sequence[Item], fractions: Mapping[str, float], seed: int, origin: str,
          hints: Mapping[str, str], noun: str = "queries") -> dict[str, list[Item]]:
    """``{"train": ..., **fractions}``: each split of ``fractions`` takes ``round(n * fraction)`` of a seeded
    permutation (``numpy.random.default_rng(seed)``) of ``items``, train the rest; every split keeps the order of
    ``items``. A positive fraction that would give an empty split, or a carve that leaves train empty, is refused
    naming ``origin``; ``hints`` (split → text) add how to give that split instead."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    splits, start = {}, 0
    for split, fraction in fractions.items():
        take = round(len(items) * fraction)
        if fraction > 0 and take == 0:
            raise DataError(f"{origin} has {len(items)} {noun}: the {split} split takes {fraction:g} of them, "
                            f"rounded, and would be empty; it needs at least {least(fraction)} {noun}"
                            f"{hints.get(split, '')}")
        splits[split] = [items[i] for i in sorted(order[start:start + take])]
        start += take
    if start >= len(items):
        raise DataError(f"{origin} has {len(items)} {noun} and carving {' and '.join(fractions)} from them "
                        f"leaves none for training; add {noun}")
    return {"train": [items[i] for i in sorted(order[start:])], **splits}
