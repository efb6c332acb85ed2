"""More text for the teacher to label: augmented copies of the training texts (TinyBERT's data augmentation).
Copies are only ever made of training rows; validation and test are never touched.

**Augmentation** (Jiao et al., *TinyBERT*, Findings of EMNLP 2020, §3.2 and Algorithm 1). Each training text gets
``copies`` new versions (TinyBERT: N_a = 20). In a copy, each word that the teacher's tokenizer reads as a single
word piece is replaced with probability ``replace_prob`` (p_t = 0.4) by one of its ``neighbours`` (K = 15) nearest
whole-word pieces, drawn uniformly, where nearness is the cosine similarity of the teacher's input embeddings
(rows of E: cos(E_w, E_v)). TinyBERT draws single-piece words from BERT's masked-LM predictions and the other words
from GloVe neighbours; offline, kdkit uses the teacher's own embedding matrix and leaves words of several pieces as
they are. Then, with probability ``delete_prob``, one random span of 1..``max_span`` whitespace-separated words is
deleted (a copy keeps at least one word). A replacement keeps the capital of a capitalised word.

Copies are reproducible: copy c of training row i draws from ``numpy.random.default_rng((seed, i, c))``, so it does
not depend on the other rows or on how many copies are asked for. By default a copy has no gold label (-1, "no
label" in ``datasets``): a replaced word can flip a review's sentiment, so only the teacher's signals teach from it
(TinyBERT trains on the augmented set with the teacher's predictions alone). ``keep_labels`` gives each copy its
source's label instead.
Unlabeled texts (``data.unlabeled``) are read by :func:`kdkit.tasks.classification.data.load_unlabeled`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

NO_LABEL = -1  # datasets' ClassLabel value for "no label"; the collator turns it into the losses' -100
# a word that may be replaced: a run of letters touching no other letter, digit, underscore or apostrophe, so that
# the pieces of "it's", "don't" or "10th" stay as they are
_WORD = re.compile(r"(?<![\w'’])[^\W\d_]+(?![\w'’])")


def whole_word_pieces(tokenizer) -> dict[int, str]:
    """The vocabulary entries that are a whole alphabetic word on their own, ``{id: word}``: the token's text
    (``convert_tokens_to_string``, so ``##ing`` and SentencePiece's ``▁`` are handled) is letters only and the
    tokenizer reads that text back as exactly this one id. Special tokens are excluded."""
    special = set(tokenizer.all_special_ids)
    vocab = sorted((i, token) for token, i in tokenizer.get_vocab().items() if i not in special)
    words = [tokenizer.convert_tokens_to_string([token]) for _, token in vocab]
    candidates = [(i, w) for (i, _), w in zip(vocab, words) if w == w.strip() and w.isalpha()]
    if not candidates:
        return {}
    read = tokenizer([w for _, w in candidates], add_special_tokens=False)["input_ids"]
    return {i: w for (i, w), ids in zip(candidates, read) if ids == [i]}


@torch.no_grad()
def nearest_words(embeddings: torch.Tensor, tokenizer, words: Sequence[str], k: int,
                  chunk: int = 1024) -> dict[str, list[str]]:
    """Each of ``words`` that the tokenizer reads as one whole-word piece → its ``k`` nearest whole-word pieces by
    the cosine similarity of the rows of ``embeddings`` (the teacher's input embedding matrix, ``(V, D)``), most
    similar first, itself excluded. Words of several pieces (or none) are absent from the result."""
    pieces = whole_word_pieces(tokenizer)
    if not pieces or not words:
        return {}
    read = tokenizer(list(words), add_special_tokens=False)["input_ids"]
    queries = {word: ids[0] for word, ids in zip(words, read) if len(ids) == 1 and ids[0] in pieces}
    ids = torch.tensor(sorted(pieces))
    table = F.normalize(embeddings[ids].float(), dim=-1)
    position = {int(i): p for p, i in enumerate(ids.tolist())}
    names = list(queries)
    found: dict[str, list[str]] = {}
    k = min(k, len(ids) - 1)
    for start in range(0, len(names), chunk):
        batch = names[start:start + chunk]
        rows = torch.tensor([position[queries[w]] for w in batch])
        scores = table[rows] @ table.T
        scores[torch.arange(len(batch)), rows] = -float("inf")  # a word is not its own neighbour
        best = scores.topk(k, dim=-1).indices if k > 0 else torch.empty(len(batch), 0, dtype=torch.long)
        for word, row in zip(batch, best.tolist()):
            found[word] = [pieces[int(ids[j])] for j in row]
    return found


def augment_text(text: str, neighbours: dict[str, list[str]], rng: np.random.Generator, replace_prob: float,
                 delete_prob: float, max_span: int) -> str:
    """One augmented copy of ``text`` (see the module docstring): word replacement, then an optional span
    deletion. ``neighbours`` maps a word as it appears in a text (and its lower-case form) to its candidates."""
    def replace(match: re.Match) -> str:
        word = match.group(0)
        options = neighbours.get(word) or neighbours.get(word.lower())
        if not options or rng.random() >= replace_prob:
            return word
        new = options[rng.integers(len(options))]
        return new[:1].upper() + new[1:] if word[:1].isupper() else new

    text = _WORD.sub(replace, text)
    if delete_prob > 0 and rng.random() < delete_prob:
        words = text.split()
        if len(words) > 1:
            span = int(rng.integers(1, min(max_span, len(words) - 1) + 1))
            start = int(rng.integers(0, len(words) - span + 1))
            text = " ".join(words[:start] + words[start + span:])
    return text


def augment_texts(texts: Sequence[str], tokenizer, embeddings: torch.Tensor, *, copies: int, replace_prob: float,
                  neighbours: int, delete_prob: float, max_span: int, seed: int) -> list[tuple[int, str]]:
    """``copies`` augmented versions of each text, as ``(source row, text)`` in row order, copy by copy."""
    words = sorted({w for text in texts for w in _WORD.findall(text)} | {w.lower() for text in texts
                                                                       for w in _WORD.findall(text)})
    table = nearest_words(embeddings, tokenizer, words, neighbours)
    out = []
    for row, text in enumerate(texts):
        for copy in range(copies):
            rng = np.random.default_rng((seed, row, copy))
            out.append((row, augment_text(text, table, rng, replace_prob, delete_prob, max_span)))
    return out
