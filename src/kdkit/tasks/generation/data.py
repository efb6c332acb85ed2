"""Generation data: prompt → completion examples, from jsonl files or the named offline sets ``bbc_summaries`` and
``bbc_text``.

Every source ends as a :class:`GenerationData`: per split (``train``/``validation``/``test``) a list of
:class:`Example`, whose ``prompt`` is a text or a tuple of chat messages (``(role, content)``, rendered with the
tokenizer's chat template when tokenised) and whose ``completion`` is the text the model must produce. Texts are
kept as written (line breaks matter to a language model); only empty or blank texts are refused.

Sources (:func:`load_generation_data`):

- **jsonl**: one object per line, either ``{"prompt": str, "completion": str}`` or
  ``{"messages": [{"role": str, "content": str}, ...]}`` whose last message is the ``assistant``'s (the completion)
  and whose earlier messages (at least one) are the prompt. Other fields are ignored; the two forms may not be
  mixed in one file. A split without a file is carved from train.
- **named offline sets** (``NAMED``): ``bbc_summaries``, BBC News (the ``bbc_news`` asset) article body → its
  headline (line 1 of each article), the prompt ``"Article: {body}\\nHeadline:"`` and the completion
  ``" {headline}"``, whitespace runs made one space. Articles are de-duplicated by body (the first file's headline
  is kept; 2,089 of the 2,225 files remain, as in retrieval's ``bbc_headlines``); bodies are kept whole here, and
  cutting them to a token budget is left to tokenisation. ``bbc_text``, the same articles as language-modelling text:
  the prompt ``"{headline}\n"``, the completion the body's opening, whole sentences (split after ``.``, ``!`` or
  ``?`` followed by a space) up to ``BBC_TEXT_WORDS`` words (at least the first sentence), so that a completion
  budget of 160 tokens seldom cuts it; scored by perplexity (``generation.score: likelihood``).

Carved splits (named sets always; files when a split has no file): 10% validation and 10% test of a permutation
of train with ``numpy.random.default_rng(seed)`` (:func:`kdkit.tasks.files.carve`); each split keeps the source's
order. Everything is read and checked before anything is returned; each problem is one :class:`DataError` naming
the file, the 1-based line and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import re
from dataclasses import dataclass
from pathlib import Path

from kdkit.errors import DataError
from kdkit.tasks.classification.data import bbc_headlines_and_bodies
from kdkit.tasks.files import SPLITS, carve, cut, field, json_objects, required_text, where

PAIR_EXAMPLE = '{"prompt": "a prompt", "completion": "its completion"}'
CHAT_EXAMPLE = ('{"messages": [{"role": "user", "content": "a question"}, '
                '{"role": "assistant", "content": "its answer"}]}')
FRACTIONS = {"validation": 0.1, "test": 0.1}
BBC_TEXT_WORDS = 80  # the longest opening of a body that ``bbc_text`` keeps, in words (whole sentences)


@dataclass(frozen=True)
class Example:
    """One prompt (a text, or chat messages as ``(role, content)`` pairs) and the completion to produce; ``source``
    is the document inside a text prompt (the article of ``bbc_summaries``), the part noisy self-distillation
    perturbs."""

    prompt: str | tuple[tuple[str, str], ...]
    completion: str
    source: str | None = None  # the document inside a text prompt, which source noise may change (None: all of it)

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)


@dataclass(frozen=True)
class GenerationData:
    """The examples of each split (``train``, ``validation``, ``test``; a split may be empty)."""

    splits: Mapping[str, list[Example]]

    def __getitem__(self, split: str) -> list[Example]:
        return self.splits[split]


def load_generation_data(source: str | None = None, *, train_file: str | Path | None = None,
                         validation_file: str | Path | None = None, test_file: str | Path | None = None,
                         seed: int = 0) -> GenerationData:
    """A named set (``source``) or jsonl files (``train_file`` and optionally the other splits' files)."""
    if (source is None) == (train_file is None):
        raise DataError("give exactly one of a named generation dataset or a train file")
    if source is not None:
        if source not in NAMED:
            raise DataError(f"unknown generation dataset '{source}'; named generation datasets: {', '.join(NAMED)}")
        return GenerationData(carve(NAMED[source](), FRACTIONS, seed, f"named dataset '{source}'", {},
                                    noun="examples"))
    files = {split: Path(path) for split, path in
             (("train", train_file), ("validation", validation_file), ("test", test_file)) if path is not None}
    read = {split: read_examples(path) for split, path in files.items()}
    missing = {split: fraction for split, fraction in FRACTIONS.items() if split not in files}
    carved = carve(read["train"], missing, seed, f"data file '{files['train']}'",
                   {split: f" or {split}_file" for split in missing}, noun="examples") if missing else {}
    return GenerationData({split: carved.get(split, read.get(split, [])) for split in SPLITS})


def read_examples(path: Path) -> list[Example]:
    """The examples of one jsonl file, in file order."""
    examples, form = [], None
    for number, obj in json_objects(path, PAIR_EXAMPLE):
        at = where(path, number)
        this = "messages" if "messages" in obj else "prompt/completion"
        if form is not None and this != form[0]:
            raise DataError(f"{at} uses '{this}' but line {form[1]} uses '{form[0]}'; one file holds one form, "
                            f"{PAIR_EXAMPLE} or {CHAT_EXAMPLE}")
        form = form or (this, number)
        examples.append(_chat(obj, at) if this == "messages" else
                        Example(required_text(field(obj, "prompt", at, PAIR_EXAMPLE), at, "prompt"),
                                required_text(field(obj, "completion", at, PAIR_EXAMPLE), at, "completion")))
    return examples


def _chat(obj: dict, at: str) -> Example:
    messages = obj["messages"]
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(f"{at}, field 'messages': {cut(repr(messages))} is not a list of at least two messages "
                        f"(the prompt, then the assistant's answer), e.g. {CHAT_EXAMPLE}")
    turns = []
    for i, message in enumerate(messages):
        key = f"messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{at}, field '{key}': {cut(repr(message))} is not an object with 'role' and "
                            f"'content', e.g. {CHAT_EXAMPLE}")
        role = required_text(field(message, "role", f"{at}, field '{key}'", CHAT_EXAMPLE), at, f"{key}.role")
        turns.append((role, required_text(field(message, "content", f"{at}, field '{key}'", CHAT_EXAMPLE), at,
                                  f"{key}.content")))
    if turns[-1][0] != "assistant":
        raise DataError(f"{at}, field 'messages[{len(turns) - 1}].role': {turns[-1][0]!r} is not 'assistant'; "
                        f"the last message is the completion to learn")
    return Example(tuple(turns[:-1]), turns[-1][1])


def _bbc_summaries() -> tuple[Example, ...]:
    """BBC News article → its headline, 2,089 pairs (de-duplicated by body), split 80/10/10"""
    return tuple(Example(f"Article: {body}\nHeadline:", f" {headline}", source=body)
                 for headline, body in bbc_headlines_and_bodies())


def opening(body: str, words: int) -> str:
    """The first sentences of ``body`` that together have at most ``words`` words (at least the first sentence)."""
    kept: list[str] = []
    count = 0
    for sentence in re.split(r"(?<=[.!?])\s+", body.strip()):
        count += len(sentence.split())
        if kept and count > words:
            break
        kept.append(sentence)
    return " ".join(kept)


def _bbc_text() -> tuple[Example, ...]:
    """BBC News headline → the opening of its article (language-modelling text), 2,089 examples, split 80/10/10"""
    return tuple(Example(f"{headline}\n", opening(body, BBC_TEXT_WORDS))
                 for headline, body in bbc_headlines_and_bodies())


NAMED: dict[str, Callable[[], tuple[Example, ...]]] = {
    "bbc_summaries": _bbc_summaries,
    "bbc_text": _bbc_text,
}
