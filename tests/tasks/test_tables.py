"""Labelled tables (kdkit.tasks.tables): rows keep the line they start on, and label problems name that line."""

from __future__ import annotations

import pytest

from kdkit.errors import DataError
from kdkit.tasks.tables import check_labels, read_table, require_rows


def test_a_csv_row_is_named_by_its_line_counting_header_blank_and_multiline_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"two\nlines",pos\n\nok,neg\nbad,\n', encoding="utf-8")
    frame, origin = read_table(path, "train", "text", "label")
    assert origin.lines == (2, 5, 6) and origin.header == 1 and not origin.typed
    with pytest.raises(DataError, match=r"t.csv', line 6, example 3: label '' is empty or null"):
        check_labels(frame["label"].tolist(), origin, "label")


def test_labels_of_two_kinds_and_an_empty_split_are_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": "pos"}\n{"text": "c", "label": 2}\n')
    frame, origin = read_table(path, "train", "text", "label")
    with pytest.raises(DataError, match=r"line 3, example 2: label 'pos' is a string but line 1 has the number 1"):
        check_labels(frame["label"].tolist(), origin, "label")
    empty = tmp_path / "e.csv"
    empty.write_text("text,label\n")
    frame, origin = read_table(empty, "test", "text", "label")
    with pytest.raises(DataError, match=r"has no rows below its header \(line 1\); the test split needs"):
        require_rows(frame, origin)
