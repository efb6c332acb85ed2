"""Tiny real things for tests: a random BERT teacher with a real WordPiece tokenizer, a labelled csv, recipes."""

from __future__ import annotations

import random
from pathlib import Path

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
    import torch

    with torch.random.fork_rng():  # the same weights whichever tests ran before (they draw from the global RNG)
        torch.manual_seed(0)
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


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def with_key(data: dict, path: str, value) -> dict:
    """``data`` with the dotted key ``path`` (list indices as numbers, e.g. ``losses.0``) set to ``value``."""
    node = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value
    return data


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``kdkit`` in-process; returns (exit code, stdout, stderr)."""
    import pytest

    from kdkit.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def classification():
    """The classification task (the pipeline's hooks), for tests below the API."""
    from kdkit.tasks import get_task

    return get_task("classification")


def prepare(recipe, teacher_path=None, data=None):
    return classification().prepare(recipe, teacher_path, data)


def tokenized(prep):
    return classification().tokenize(prep)


def teacher_source(prep, train):
    from kdkit.engine.pipeline import teacher_source as source

    return source(classification(), prep, train)


def make_tiny_pairs(path: Path, n: int = 60, seed: int = 0) -> Path:
    """Retrieval pairs ``{"query", "positive"}`` in jsonl over the tiny vocabulary: each passage is 6-20 words,
    its query 3 of them."""
    import json

    rng = random.Random(seed)
    words = POSITIVE + NEGATIVE + FILLER
    lines, seen = [], set()
    while len(lines) < n:
        passage = " ".join(rng.choices(words, k=rng.randint(6, 20)))
        query = " ".join(rng.sample(passage.split(), 3))
        if query not in seen:
            seen.add(query)
            lines.append(json.dumps({"query": query, "positive": passage}))
    path.write_text("\n".join(lines) + "\n")
    return path


LM_WORDS = ["Article:", "Headline:", "the", "a", "match", "team", "won", "lost", "game", "city", "mayor", "said",
            "new", "plan", "bank", "rates", "rise", "fall", "film", "star", "award", "music", "band", "tour"]


def _word_tokenizer():
    """A real word-level tokenizer: ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, then :data:`LM_WORDS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<pad>", "<eos>", "<unk>", *LM_WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def make_tiny_lm(folder: Path, layers: int = 4, hidden: int = 32, heads: int = 4) -> Path:
    """A random tiny Llama with a real word-level tokenizer (:func:`_word_tokenizer`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _word_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
                         bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_t5(folder: Path, layers: int = 2, hidden: int = 32, heads: int = 4) -> Path:
    """A random tiny T5 (encoder-decoder) with the same word-level tokenizer; decoding starts at ``<pad>``."""
    from transformers import T5Config, T5ForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _word_tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=hidden, d_ff=2 * hidden, d_kv=hidden // heads,
                      num_layers=layers, num_decoder_layers=layers, num_heads=heads, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_generation_jsonl(path: Path, n: int = 60, seed: int = 0) -> Path:
    """Prompt/completion pairs whose headline is the article's first two words (learnable by a tiny model)."""
    import json

    rng = random.Random(seed)
    words = LM_WORDS[2:]
    lines = []
    for _ in range(n):
        body = [rng.choice(words) for _ in range(rng.randint(4, 12))]
        lines.append(json.dumps({"prompt": f"Article: {' '.join(body)} Headline:",
                                 "completion": " " + " ".join(body[:2])}))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_tiny_multimodal(folder: Path, n: int = 48, seed: int = 0) -> Path:
    """``folder/train.csv``: an image (a red or blue square with noise), a text and two tabular columns per row; the
    label shows in the image colour and in the words (each alone predicts it), the tabular columns are noise."""
    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,text,age,shop,label"]
    for i in range(n):
        label = i % 2
        colour = (200 + rng.randint(0, 55), 0, 0, 255) if label else (0, 0, 200 + rng.randint(0, 55), 255)
        Image.new("RGBA", (8, 8), colour).save(folder / f"img{i}.png")
        words = rng.sample(POSITIVE if label else NEGATIVE, 1) + rng.sample(FILLER, rng.randint(1, 4))
        rng.shuffle(words)
        age = "" if i % 7 == 0 else str(rng.randint(18, 70))
        rows.append(f"img{i}.png,{' '.join(words)},{age},{rng.choice(['a', 'b', ''])},{'pos' if label else 'neg'}")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder / "train.csv"
