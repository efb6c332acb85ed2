"""Reading a task's jsonl data files with one-line errors naming the file, the 1-based line and the field, and
carving the splits a source lacks from its training examples.

Shared by the tasks whose examples are JSON objects (retrieval pairs and BEIR files, generation prompts and
completions); the classification task's table formats live in :mod:`kdkit.tasks.classification.data`, whose
:func:`~kdkit.tasks.classification.data.jsonl_objects` parses the lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from kdkit.errors import DataError
from kdkit.tasks.classification.data import _least, jsonl_objects

Item = TypeVar("Item")


def where(path: Path, line: int) -> str:
    """How an error names a line of a data file."""
    return f"data file '{path}', line {line}"


def read_text(path: Path) -> str:
    """The file's text (UTF-8, an initial byte-order mark dropped); a missing, empty or non-UTF-8 file is refused
    naming the line and column of the first undecodable byte."""
    if path.is_dir():
        raise DataError(f"data file '{path}' is a directory; give a .jsonl file")
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file '{path}' is empty")
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
                            f"rounded, and would be empty; it needs at least {_least(fraction)} {noun}"
                            f"{hints.get(split, '')}")
        splits[split] = [items[i] for i in sorted(order[start:start + take])]
        start += take
    if start >= len(items):
        raise DataError(f"{origin} has {len(items)} {noun} and carving {' and '.join(fractions)} from them "
                        f"leaves none for training; add {noun}")
    return {"train": [items[i] for i in sorted(order[start:])], **splits}
