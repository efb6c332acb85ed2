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
    ("latin.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"), r"latin\.csv' is not UTF-8"),
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
