"""Labelled tables: csv, tsv, jsonl and json files read row by row with the line each row starts on, and the
checks on their labels, so every problem is one :class:`~kdkit.errors.DataError` naming the file, the 1-based line
(or example) and the column.

Shared by the tasks whose data is a table with a label column (classification: text + label; multimodal: image
paths, texts and tabular columns + label). csv/tsv lines count the header, blank lines and the lines of quoted
multi-line texts; jsonl blank lines are skipped but counted; .json files have examples, not lines.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from kdkit.errors import DataError
from kdkit.loading import first_line
from kdkit.tasks.files import cut, is_null, jsonl_objects, read_text


@dataclass(frozen=True)
class Origin:
    """Where one split's rows come from, so that an error can name a row the way the user finds it: ``name`` (the
    file or hub split), the split, the 1-based line of the file each row starts on and the header's line (csv,
    tsv, jsonl; ``None`` for .json files and hub splits, whose rows have no lines), and whether the format types
    its values (jsonl, json, hub) or every value is text (csv, tsv: a label ``3`` is told from ``pos`` by its look).
    """

    name: str
    split: str
    lines: tuple[int, ...] | None = None
    header: int | None = None
    typed: bool = True

    def __str__(self) -> str:
        return self.name

    def place(self, row: int) -> str:
        return f"line {self.lines[row]}" if self.lines else f"example {row + 1}"

    def at(self, row: int) -> str:
        line = f", line {self.lines[row]}" if self.lines else ""
        return f"{self.name}{line}, example {row + 1}"


def read_table(path: Path, split: str, text_column: str, label_column: str) -> tuple[pd.DataFrame, Origin]:
    content = read_text(path, "a .csv, .tsv, .jsonl or .json file", f"; the {split} split needs at least one example")
    suffix = path.suffix.lower()
    name = f"data file '{path}'"
    try:
        if suffix in (".csv", ".tsv"):
            sep = "\t" if suffix == ".tsv" else ","
            header, lines = _csv_lines(content, sep, name, suffix[1:])
            # the text column stays a string even when it looks like a number or "NA"
            frame = pd.read_csv(io.StringIO(content), sep=sep, dtype={text_column: str}, keep_default_na=False)
            known = header is not None and len(lines) == len(frame)
            return frame, Origin(name, split, tuple(lines) if known else None, header if known else None,
                                  typed=False)
        if suffix == ".jsonl":
            kept, lines = _jsonl_lines(content, name, text_column, label_column)
            frame = pd.read_json(io.StringIO(kept), lines=True, dtype=False)
            return frame, Origin(name, split, tuple(lines) if len(lines) == len(frame) else None)
        if suffix == ".json":
            records = json.loads(content)
            for i, record in enumerate(records if isinstance(records, list) else []):
                for key, item in (record.items() if isinstance(record, dict) else ()):
                    if _beyond_int64(item):
                        raise DataError(f"{name}, example {i + 1}, column '{cut(key, 40)}': "
                                        f"{cut(json.dumps(item))} holds a whole number beyond 64 bits, which no "
                                        f"column can hold")
            return pd.read_json(io.StringIO(content), dtype=False), Origin(name, split)
    except (ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else first_line(err)
        raise DataError(f"{name} cannot be parsed as {suffix[1:]}: {reason}") from None
    raise DataError(f"{name} has extension '{suffix}'; use .csv, .tsv, .jsonl or .json")


def _csv_lines(content: str, sep: str, name: str, kind: str) -> tuple[int | None, list[int]]:
    """The line of the header and of each row of a csv/tsv file, as pandas reads it (lines holding only whitespace
    skipped); a row with more fields than the header is refused here with its line, where pandas would either
    fail naming a line that skips blank ones or, when every row has one field more, silently read the first
    column as an index and shift the others. ``(None, [])`` where the csv module cannot read the file: then
    pandas' own error or no line numbers."""
    read = {"count": 0, "last": ""}  # physical lines read so far, and the last one

    def counted(stream: Iterable[str]) -> Iterable[str]:
        for line in stream:
            read["count"], read["last"] = read["count"] + 1, line
            yield line

    separator = "a tab" if sep == "\t" else "a comma"
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(content) + 1))  # one 10 MB text is one field; restored below
    try:
        header, names, lines, start = None, [], [], 1
        for record in csv.reader(counted(io.StringIO(content, newline="")), delimiter=sep):
            line, start = start, read["count"] + 1
            if read["count"] == line and not read["last"].strip():
                continue  # a blank line: pandas skips it
            if header is None:
                header, names = line, record
            elif len(record) > len(names):
                raise DataError(f"{name}, line {line} cannot be parsed as {kind}: {len(record)} fields where the "
                                f"header (line {header}) has {len(names)} ({preview(names)}); quote a text that "
                                f"contains {separator}")
            else:
                lines.append(line)
        return header, lines
    except csv.Error:
        return None, []
    finally:
        csv.field_size_limit(limit)


def _jsonl_lines(content: str, name: str, text_column: str, label_column: str) -> tuple[str, list[int]]:
    """The non-blank lines of a jsonl file (for pandas) and their line numbers, after checking that each is one
    JSON object: pandas fails on a ``null`` or ``3`` line with a TypeError and names no line for broken JSON."""
    kept, lines = [], []
    example = f'{{"{cut(text_column, 40)}": "a text", "{cut(label_column, 40)}": "a label"}}'
    for number, line, value in jsonl_objects(content, name, example):
        for key, item in value.items():
            if _beyond_int64(item):
                raise DataError(f"{name}, line {number}, column '{cut(key, 40)}': {cut(json.dumps(item))} holds "
                                f"a whole number beyond 64 bits, which no column can hold")
        kept.append(line)
        lines.append(number)
    return "\n".join(kept), lines


def _beyond_int64(value: Any) -> bool:
    """Whether ``value`` (parsed JSON) holds an integer outside int64: pandas' JSON reader fails on one with no
    line to point to."""
    if isinstance(value, int) and not isinstance(value, bool):
        return not -(2**63) <= value < 2**64  # uint64 is read too
    if isinstance(value, list):
        return any(_beyond_int64(item) for item in value)
    if isinstance(value, dict):
        return any(_beyond_int64(item) for item in value.values())
    return False


def preview(values: Iterable[Any], limit: int = 10) -> str:
    """At most ``limit`` values, comma-separated and each cut short, for an error line; the count if there are more."""
    values = list(values)
    more = f", … ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(cut(str(v), 40) for v in values[:limit]) + more


def looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def label_problem(value: Any) -> str | None:
    if is_null(value) or (isinstance(value, str) and not value.strip()):
        return "is empty or null"
    # "NaN" is what a missing number becomes when a table is written out as text; as a class it would be one more
    if isinstance(value, str) and value.strip().lower() == "nan":
        return "marks a missing value, not a class"
    if _not_a_class(value):
        return "is not a class: labels are strings or whole numbers"
    return None


def _not_a_class(value: Any) -> bool:
    """A label names a class (a string or a whole number); a fraction, a list or a mapping does not: those are
    regression or multi-label targets, which a single-label classifier cannot learn."""
    if isinstance(value, (float, np.floating)):
        return not float(value).is_integer()
    return not isinstance(value, (str, int, np.integer))


def one_kind(labels: list[Any], origin: Origin, label_column: str) -> None:
    """Refuse labels that mix numbers and strings, naming the first label of the rarer kind and one of the other.

    In csv/tsv every value is text, so a label's kind is its look: ``3`` among ``pos``/``neg`` (or ``NA`` among
    ``0``/``1``) is a stray value that would silently become one more class.
    """
    def kind(value: Any) -> str:
        return "string" if isinstance(value, str) and (origin.typed or not looks_numeric(value)) else "number"

    kinds = [kind(v) for v in labels]
    if len(set(kinds)) < 2:
        return
    # the rarer kind is the stray one; on a tie, the kind the file does not start with
    odd = min(("number", "string"), key=lambda k: (kinds.count(k), k == kinds[0]))
    common = "string" if odd == "number" else "number"
    row, ref = kinds.index(odd), kinds.index(common)
    raise DataError(f"{origin.at(row)}: {cut(label_column, 40)} {cut(repr(labels[row]))} is a {odd} but "
                    f"{origin.place(ref)} has the {common} {cut(repr(labels[ref]))}: labels mix numbers and "
                    f"strings; use one kind in column '{cut(label_column, 40)}'")


def require_rows(frame: pd.DataFrame, origin: Origin) -> None:
    """Refuse a split that has no rows, naming its header's line when it has one."""
    if frame.empty:
        below = f" below its header (line {origin.header})" if origin.header else ""
        raise DataError(f"{origin} has no rows{below}; the {origin.split} split needs at least one example")


def check_labels(labels: list[Any], origin: Origin, label_column: str) -> None:
    """Refuse the first row whose label is missing or not a class (:func:`label_problem`), then labels that mix
    numbers and strings (:func:`one_kind`)."""
    for row, value in enumerate(labels):
        problem = label_problem(value)
        if problem:
            raise DataError(f"{origin.at(row)}: {cut(label_column, 40)} {cut(repr(value))} {problem}; every "
                            f"example needs a class in column '{cut(label_column, 40)}'")
    one_kind(labels, origin, label_column)
