"""Shared fixtures: a tiny random BERT teacher with a real WordPiece tokenizer, and a tiny labelled csv."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

POSITIVE = ["good", "great", "fun", "love", "superb"]
NEGATIVE = ["bad", "awful", "boring", "hate", "dull"]
FILLER = ["the", "movie", "film", "plot", "was", "is", "a", "really", "quite"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_teacher(folder: Path, layers: int = 4, hidden: int = 32, heads: int = 4, num_labels: int = 2,
                      vocab: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocab or SPECIAL + POSITIVE + NEGATIVE + FILLER
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=37, max_position_embeddings=64,
                        num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_csv(path: Path, n: int = 80, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = ["text,label"]
    for i in range(n):
        label = i % 2
        words = rng.sample(POSITIVE if label else NEGATIVE, 2) + rng.sample(FILLER, rng.randint(1, 6))
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{'pos' if label else 'neg'}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return make_tiny_teacher(tmp_path_factory.mktemp("models") / "teacher")


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return make_tiny_csv(tmp_path_factory.mktemp("data") / "train.csv")


@pytest.fixture
def tiny_recipe(tiny_teacher, tiny_csv, tmp_path):
    """A recipe dict that distils the tiny teacher in a few steps; tests change what they need."""
    return {
        "name": "tiny",
        "data": {"train_file": str(tiny_csv), "max_length": 16},
        "teacher": {"model": str(tiny_teacher)},
        "student": {"init": "teacher_layers", "layers": [0, 2]},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
        "training": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "logging_steps": 2, "save_steps": 2},
        "evaluation": {"latency_batch_sizes": [1, 4], "latency_repeats": 2},
        "output_dir": str(tmp_path / "run"),
    }


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path
