import json
from collections import Counter

import pytest
import torch
from transformers import AutoTokenizer

from kdkit.errors import ConfigError, DataError
from kdkit.tasks.classification import (DataCollator, load_classification_data, load_named_dataset,
                                        tokenize)


def _texts(data):
    return {split: data.splits[split]["text"] for split in ("train", "validation", "test")}


@pytest.mark.parametrize("name, total, label_names", [
    ("rotten_tomatoes", (12_700, 12_760), ["rotten", "fresh"]),
    ("bbc_news", (2_125, 2_125), ["business", "entertainment", "politics", "sports", "tech"]),
    ("tweets", (37_000, 37_243), ["negative", "neutral", "positive"]),
])
def test_named_dataset_sizes_and_stratified_80_10_10(name, total, label_names):
    data = load_named_dataset(name)
    assert data.label_names == label_names
    assert data.splits["train"].features["label"].names == label_names
    texts = _texts(data)
    n = sum(map(len, texts.values()))
    assert total[0] <= n <= total[1]
    assert len(set().union(*texts.values())) == n  # de-duplicated and the splits are disjoint
    counts = {split: Counter(data.splits[split]["label"]) for split in texts}
    for label in range(len(label_names)):
        per_label = sum(c[label] for c in counts.values())
        assert counts["validation"][label] == counts["test"][label] == round(per_label * 0.1)


def test_named_splits_are_fixed_by_the_seed():
    assert _texts(load_named_dataset("bbc_news", seed=0)) == _texts(load_named_dataset("bbc_news"))
    other = _texts(load_named_dataset("bbc_news", seed=1))
    assert set(other["test"]) != set(_texts(load_named_dataset("bbc_news"))["test"])


def test_bbc_text_is_headline_and_body_on_one_line():
    text = next(t for t in load_named_dataset("bbc_news").splits["train"]["text"]
                if t.startswith("Ad sales boost Time Warner profit "))
    assert text.startswith("Ad sales boost Time Warner profit Quarterly profits at US media giant TimeWarner")
    assert "\n" not in text and "  " not in text


def test_unknown_named_dataset_lists_the_names():
    with pytest.raises(DataError, match="rotten_tomatoes, bbc_news, tweets"):
        load_named_dataset("imdb")


def test_named_source_goes_to_the_named_loader():
    assert _texts(load_classification_data("bbc_news")) == _texts(load_named_dataset("bbc_news"))


def test_csv_string_labels_sorted_and_missing_splits_carved(tiny_csv):
    data = load_classification_data(train_file=tiny_csv, seed=3)
    assert data.label_names == ["neg", "pos"]
    assert {s: len(d) for s, d in data.splits.items()} == {"train": 64, "validation": 8, "test": 8}
    texts = _texts(data)
    assert not set(texts["train"]) & (set(texts["validation"]) | set(texts["test"]))
    assert _texts(load_classification_data(str(tiny_csv), train_file=tiny_csv, seed=3)) == texts
    # the word lists of conftest make the label recoverable from the text
    for row in data.splits["test"]:
        assert row["label"] == int(any(w in row["text"].split() for w in ("good", "great", "fun", "love", "superb")))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_numeric_labels_sort_numerically_and_given_splits_are_kept(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"review": f"t{i}", "stars": s} for i, s in enumerate([10, 2, 2, 10])])
    test = _jsonl(tmp_path / "test.jsonl", [{"review": "x", "stars": 10}])
    data = load_classification_data(train_file=train, validation_file=test, test_file=test,
                                    text_column="review", label_column="stars")
    assert data.label_names == ["2", "10"]
    assert data.splits["train"]["label"] == [1, 0, 0, 1]
    assert data.splits["test"][0] == {"text": "x", "label": 1}


def test_csv_text_that_looks_like_a_number_stays_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n42,a\nNA,b\n")
    assert load_classification_data(train_file=path, validation_fraction=0, test_fraction=0
                                    ).splits["train"]["text"] == ["42", "NA"]


@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, "does not exist"),
    ("empty.csv", b"\n", "is empty"),
    ("header.csv", b"text,label\n", "has no rows"),
    ("cols.csv", b"sentence,y\na,1\n", r"no column 'text' \(columns: sentence, y\); set text_column"),
    ("latin.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"),
     r"latin\.csv', line 2 is not UTF-8 \(byte b'\\xe9' at column 4\)"),
    ("num.jsonl", b'{"text": 5, "label": 1}\n', "example 1: text 5 is not a string"),
    ("nolabel.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": null}\n',
     "example 2: label nan is empty or null"),
    ("data.xlsx", b"x", "use .csv, .tsv, .jsonl or .json"),
    ("broken.jsonl", b"{not json\n", "cannot be parsed as jsonl"),
])
def test_bad_files_raise_one_line_data_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_classification_data(train_file=path)
    assert "\n" not in str(info.value)


def test_test_label_unseen_in_train_is_named(tmp_path, tiny_csv):
    test = tmp_path / "test.csv"
    test.write_text("text,label\ngood film,pos\nmeh,neutral\n")
    with pytest.raises(DataError, match=r"label 'neutral' of the test split does not occur .* neg, pos"):
        load_classification_data(train_file=tiny_csv, test_file=test)


@pytest.mark.parametrize("kwargs", [{"validation_fraction": 0.6, "test_fraction": 0.5},
                                    {"validation_fraction": -0.1}])
def test_bad_fractions_are_config_errors(tiny_csv, kwargs):
    with pytest.raises(ConfigError, match="fraction"):
        load_classification_data(train_file=tiny_csv, **kwargs)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_teacher):
    return AutoTokenizer.from_pretrained(tiny_teacher)


def test_tokenize_truncates_without_padding_and_a_second_tokenizer_adds_prefixed_columns(tiny_csv, tiny_tokenizer):
    data = load_classification_data(train_file=tiny_csv)
    student = tokenize(data, tiny_tokenizer, max_length=6)
    assert set(student["train"].column_names) == {"text", "labels", "input_ids", "attention_mask"}
    lengths = [len(ids) for ids in student["train"]["input_ids"]]
    assert max(lengths) == 6 and min(lengths) < 6  # truncated, and shorter ones left unpadded
    assert student["test"]["labels"] == data.splits["test"]["label"]
    both = tokenize(student, tiny_tokenizer, max_length=8, prefix="teacher_")
    assert {"input_ids", "teacher_input_ids", "teacher_attention_mask"} <= set(both["validation"].column_names)
    assert max(len(ids) for ids in both["train"]["teacher_input_ids"]) == 8
    single = tokenize({"test": data.splits["test"]}, tiny_tokenizer, max_length=6)
    assert list(single) == ["test"] and single["test"]["input_ids"] == student["test"]["input_ids"]


def test_tokenize_rejects_a_bad_max_length(tiny_csv, tiny_tokenizer):
    with pytest.raises(ConfigError, match="max_length 0"):
        tokenize(load_classification_data(train_file=tiny_csv), tiny_tokenizer, max_length=0)


def test_collator_pads_dynamically_with_each_tokenizers_pad_id():
    features = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "teacher_input_ids": [9, 8],
         "teacher_attention_mask": [1, 1], "token_type_ids": [0, 0, 0], "text": "a", "labels": 1},
        {"input_ids": [5], "attention_mask": [1], "teacher_input_ids": [9, 8, 7, 6],
         "teacher_attention_mask": [1, 1, 1, 1], "token_type_ids": [0], "text": "b", "labels": 0},
    ]
    batch = DataCollator(pad_token_id=0, teacher_pad_token_id=1)(features)
    assert set(batch) == {"input_ids", "attention_mask", "teacher_input_ids", "teacher_attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["teacher_input_ids"].tolist() == [[9, 8, 1, 1], [9, 8, 7, 6]]
    assert batch["teacher_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [1, 0]
    assert all(t.dtype == torch.long for t in batch.values())
    assert DataCollator(3)(features[1:])["teacher_input_ids"].tolist() == [[9, 8, 7, 6]]


def test_hub_dataset_keeps_its_class_label_order_and_carves_validation(monkeypatch):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["pos", "neg"])})
    split = {"sentence": [f"s{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    hub = datasets.DatasetDict({"train": datasets.Dataset.from_dict(split, features=features),
                                "test": datasets.Dataset.from_dict(split, features=features).select(range(4))})
    monkeypatch.setattr(datasets, "load_dataset", lambda name: hub)
    data = load_classification_data("someone/sst", text_column="sentence")
    assert data.label_names == ["pos", "neg"]
    assert {s: len(d) for s, d in data.splits.items()} == {"train": 18, "validation": 2, "test": 4}
    assert data.splits["test"][1] == {"text": "s1", "label": 1}


def test_unloadable_hub_name_is_a_data_error(monkeypatch):
    import datasets

    def offline(name):
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"'nope/nothing' is not a named dataset .* no network$"):
        load_classification_data("nope/nothing")


# --- every problem of a data file is one line naming the file, the line of the file and the column ---

GOOD = [("good fun film", "pos"), ("bad dull plot", "neg"), ("great movie", "pos"), ("awful film", "neg")]


def _csv_bytes(rows, header="text,label") -> bytes:
    return ("\n".join([header, *(f"{t},{l}" for t, l in rows)]) + "\n").encode()


def _jsonl_bytes(rows) -> bytes:
    return "".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows).encode()


def _refused(path, content, *fragments, **kwargs):
    """Load ``content`` written to ``path`` as the train file; the one-line DataError must hold every fragment and
    the file's name."""
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_classification_data(train_file=path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in (f"'{path}'", *fragments):
        assert fragment in message, message
    return message


@pytest.mark.parametrize("line, shown", [("null", "null"), ("3", "a number"), ('[1, "pos"]', "a list"),
                                         ('"good film"', "a string"), ("true", "a boolean")])
def test_a_jsonl_line_that_is_not_an_object_is_named(tmp_path, line, shown):
    rows = [{"text": t, "label": l} for t, l in GOOD]
    _refused(tmp_path / "d.jsonl", _jsonl_bytes([*rows[:2], line + "\n", *rows[2:]]),
             f"line 3 is {shown}, not an object", '"review"', '"stars"', text_column="review", label_column="stars")


def test_jsonl_blank_lines_are_skipped_and_counted(tmp_path):
    rows = [{"text": t, "label": l} for t, l in GOOD * 3]
    plain = load_classification_data(train_file=_jsonl(tmp_path / "plain.jsonl", rows), validation_fraction=0,
                                     test_fraction=0)
    spaced = tmp_path / "spaced.jsonl"
    spaced.write_bytes(b"\n" + _jsonl_bytes(rows[:3]) + b"  \n\r\n" + _jsonl_bytes(rows[3:]))
    assert _texts(load_classification_data(train_file=spaced, validation_fraction=0, test_fraction=0)) == _texts(plain)
    spaced.write_bytes(spaced.read_bytes() + b'{"text": "x", "label"\n')
    _refused(spaced, spaced.read_bytes(), "line 16 cannot be parsed as jsonl", "column 22")


@pytest.mark.parametrize("name, content, fragments", [
    ("null.jsonl", _jsonl_bytes([{"text": "a", "stars": 1}, {"text": "b", "stars": 2}, {"text": "c"}]),
     ["line 3", "example 3", "stars nan is empty or null", "column 'stars'"]),
    ("empty.csv", _csv_bytes([*GOOD, ("fine film", "")], "text,stars"),
     ["line 6", "stars '' is empty or null", "column 'stars'"]),
    ("blank.tsv", b"text\tstars\nok film\t1\nfine\t \n", ["line 3", "stars ' ' is empty or null", "column 'stars'"]),
    ("nan.csv", b"text,stars\na,1\nb,0\nc,NaN\nd,1\n", ["line 4", "stars 'NaN' marks a missing value",
                                                       "column 'stars'"]),
    ("nan.jsonl", _jsonl_bytes([{"text": "a", "stars": 0}, {"text": "b", "stars": "nan"}]),
     ["line 2", "stars 'nan' marks a missing value", "column 'stars'"]),
    ("nanliteral.jsonl", b'{"text": "a", "stars": 0}\n{"text": "b", "stars": NaN}\n', ["line 2", "stars nan"]),
    ("float.csv", b"text,stars\na,1\nb,1.5\nc,2\n", ["line 3", "stars 1.5 is not a class", "column 'stars'"]),
    ("inf.jsonl", b'{"text": "a", "stars": 1}\n{"text": "b", "stars": Infinity}\n', ["line 2", "stars inf"]),
    ("mixed.jsonl", _jsonl_bytes([{"text": t, "stars": s} for t, s in zip("abcde", [1, 2, "pos", 1, 2])]),
     ["line 3", "stars 'pos' is a string", "line 1 has the number 1", "mix numbers and strings", "column 'stars'"]),
    ("mixed.csv", b"text,stars\na,pos\nb,neg\nc,3\nd,pos\n",
     ["line 4", "stars '3' is a number", "line 2 has the string 'pos'", "mix numbers and strings"]),
    ("na.csv", b"text,stars\na,0\nb,1\nc,NA\nd,1\n", ["line 4", "stars 'NA' is a string", "mix numbers and strings"]),
])
def test_bad_labels_name_file_line_and_column(tmp_path, name, content, fragments):
    _refused(tmp_path / name, content, *fragments, label_column="stars")


@pytest.mark.parametrize("name, content, fragments", [
    ("empty.csv", _csv_bytes([*GOOD[:2], ("", "pos"), *GOOD[2:]], "review,label"),
     ["line 4", "example 3", "review '' is empty or only whitespace", "column 'review'"]),
    ("space.csv", _csv_bytes([*GOOD, ("   ", "pos")], "review,label"),
     ["line 6", "review '   ' is empty or only whitespace", "column 'review'"]),
    ("short.csv", b"review,label\nok film,pos\nbad film\n", ["line 3", "label '' is empty or null"]),
    ("number.jsonl", _jsonl_bytes([{"review": "a", "label": 1}, {"review": 5, "label": 1}]),
     ["line 2", "review 5 is not a string", "column 'review'"]),
    ("null.jsonl", _jsonl_bytes([{"review": "a", "label": 1}, {"review": None, "label": 2}]),
     ["line 2", "review nan is empty or null", "column 'review'"]),
    ("nan.jsonl", b'{"review": "a", "label": 1}\n\n{"review": NaN, "label": 2}\n',
     ["line 3", "example 2", "review nan is empty or null", "column 'review'"]),
    ("missing.jsonl", _jsonl_bytes([{"review": "a", "label": 1}, {"label": 2}]),
     ["line 2", "review nan is empty or null"]),
])
def test_bad_texts_name_file_line_and_column(tmp_path, name, content, fragments):
    _refused(tmp_path / name, content, *fragments, text_column="review")


def test_the_first_bad_line_is_named_whatever_the_problem(tmp_path):
    content = b"text,label\na,pos\nb,\n,neg\n"
    _refused(tmp_path / "d.csv", content, "line 3", "label '' is empty or null")
    _refused(tmp_path / "d.csv", content.replace(b"b,\n", b"b,pos\n"), "line 4", "text '' is empty")


def test_lines_count_the_header_blank_lines_and_quoted_newlines(tmp_path):
    content = b'\ntext,label\n"two\nlines",pos\n\nok,neg\n"a, b",pos\nc,1.5\n'
    _refused(tmp_path / "d.csv", content, "line 8", "example 4", "label '1.5' is a number")


def test_a_test_label_unseen_in_train_names_its_line(tmp_path, tiny_csv):
    test = tmp_path / "test.csv"
    test.write_text("text,label\ngood film,pos\n\nbad,neg\nmeh,neutral\n")
    with pytest.raises(DataError) as info:
        load_classification_data(train_file=tiny_csv, test_file=test)
    assert f"'{test}', line 5, example 3: label 'neutral' of the test split does not occur" in str(info.value)
    assert "column 'label'" in str(info.value)


def test_one_training_label_names_the_column(tmp_path):
    _refused(tmp_path / "d.csv", _csv_bytes([(t, "pos") for t, _ in GOOD], "text,stars"),
             "label 'pos' in column 'stars'", "at least two labels", label_column="stars")


def test_csv_header_only_and_ragged_rows_name_the_line(tmp_path):
    _refused(tmp_path / "h.csv", b"\ntext,label\n", "has no rows below its header (line 2)",
             "the train split needs at least one example")
    _refused(tmp_path / "r.csv", _csv_bytes(GOOD) + b"good, fun film,pos\n" + _csv_bytes(GOOD, "x,y"),
             "line 6 cannot be parsed as csv: 3 fields", "header (line 1) has 2 (text, label)")
    _refused(tmp_path / "r.tsv", b"text\tlabel\na\tpos\nb\tneg\tx\n", "line 3 cannot be parsed as tsv: 3 fields")


def test_a_carved_split_that_would_be_empty_fails_at_load_time(tmp_path):
    rows = [("good film", "pos"), ("bad plot", "neg"), ("great", "pos")]
    message = _refused(tmp_path / "tiny.csv", _csv_bytes(rows), "3 examples of 2 labels (neg, pos)",
                       "the validation split", "would be empty", "at least 6 examples", "validation_file")
    assert "test" not in message.split("'")[-1]
    # with a validation file the test split is the one that is too small; 0.3 of 4 rounds to 1
    (tmp_path / "dev.csv").write_bytes(_csv_bytes(rows))
    _refused(tmp_path / "tiny.csv", _csv_bytes(rows), "the test split", "at least 6 examples", "test_file",
             validation_file=tmp_path / "dev.csv")
    assert len(load_classification_data(train_file=tmp_path / "tiny.csv", validation_file=tmp_path / "dev.csv",
                                        test_fraction=0.3).splits["test"]) == 1


def test_carving_that_takes_every_example_of_a_label_is_refused(tmp_path):
    rows = [*[(f"good {i}", "pos") for i in range(20)], ("bad", "neg"), ("awful", "neg")]
    _refused(tmp_path / "d.csv", _csv_bytes(rows), "label 'neg' has 2 examples", "none for training",
             validation_fraction=0.45, test_fraction=0.45)


@pytest.mark.parametrize("name, content, fragments", [
    ("dev.csv", b"text,label\n", ["has no rows below its header (line 1)", "the validation split"]),
    ("dev.jsonl", b"\n\n", ["is empty", "the validation split"]),
])
def test_an_empty_validation_file_names_the_split(tmp_path, tiny_csv, name, content, fragments):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        load_classification_data(train_file=tiny_csv, validation_file=tmp_path / name)
    assert all(f in str(info.value) for f in [f"'{tmp_path / name}'", *fragments]), str(info.value)


def test_a_hub_class_label_without_training_examples_is_not_taken_for_a_carved_away_one(monkeypatch):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["pos", "neg", "unused"])})
    split = {"text": [f"s{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    monkeypatch.setattr(datasets, "load_dataset", lambda name: datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(split, features=features)}))
    data = load_classification_data("someone/three")
    assert data.label_names == ["pos", "neg", "unused"]
    assert {s: len(d) for s, d in data.splits.items()} == {"train": 16, "validation": 2, "test": 2}
