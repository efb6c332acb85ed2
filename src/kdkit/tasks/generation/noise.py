"""Noisy self-distillation (Liu, Shen & Lapata, "Noisy Self-Knowledge Distillation for Text Summarization",
NAACL 2021): a student of the teacher's own size learns from the fine-tuned teacher, both perturbed.

- **Teacher noise**: dropout kept on while the teacher scores a batch (``teacher_dropout``, 0.15), where a
  Transformer's own dropout sits: on what each block adds to the residual stream, h_out = h_in + dropout(block(h_in)
  − h_in) (inverted dropout), whatever dropout the architecture has of its own (Llama has none), so each step sees
  another sample of the teacher. (A first version dropped out the residual stream itself after every block; over 30
  blocks that compounds into a far noisier teacher than the paper's, and its student lost 3.6 ROUGE-L points to
  the plain twin on bbc_summaries; see docs/generation.md.)
- **Student noise on the source** (the part of the prompt that is the document; the template around it is kept):
  word drop (each word with probability ``word_drop``, at least one word kept), local word shuffle (each word moves
  at most ``shuffle_window`` places: sort by position + U(0, k + 1), Lample et al. 2018), sentence shuffle (with
  probability ``sentence_shuffle`` the sentences are permuted), sentence drop (each sentence with probability
  ``sentence_drop``, one kept), and replacement of source tokens by their nearest neighbour in the student's input
  embedding space (cosine, the token itself excluded) with probability ``neighbour_replace`` (text prompts; in a
  chat prompt the last message is the source and gets the word and sentence noise).
- The completion (the label) is never changed, and the teacher reads the clean prompt; its logits at the completion
  positions line up with the student's because both layouts end the prompt at the same column.

Noise is drawn afresh each time a batch holds an example, seeded by (seed, optimiser step, micro-batch, process,
example): a rerun or a resumed run sees the same noise, and each epoch other noise. With teacher dropout the
teacher's signals differ at every step, so such a recipe runs the teacher live and refuses a fixed cache
(``teacher.cache`` a folder); without it the teacher reads clean prompts and its cache is used as usual.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kdkit.capture import find_layers
from kdkit.tasks.generation.batches import Encoder, layout, seed_of, split_batch

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def word_drop(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Each word dropped with probability ``p``; at least one word is kept."""
    kept = [w for w in words if rng.random() >= p]
    return kept or ([rng.choice(words)] if words else [])


def local_shuffle(words: list[str], window: int, rng: random.Random) -> list[str]:
    """Words sorted by position + U(0, window + 1): none moves more than ``window`` places."""
    if window <= 0:
        return list(words)
    keys = [i + rng.uniform(0, window + 1) for i in range(len(words))]
    return [w for _, w in sorted(zip(keys, words), key=lambda pair: pair[0])]


def sentences_of(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def sentence_noise(sentences: list[str], shuffle: float, drop: float, rng: random.Random) -> list[str]:
    """Sentences dropped (each with probability ``drop``, one kept) and permuted (with probability ``shuffle``)."""
    kept = [s for s in sentences if rng.random() >= drop] or ([rng.choice(sentences)] if sentences else [])
    if rng.random() < shuffle:
        rng.shuffle(kept)
    return kept


def noisy_text(text: str, cfg, rng: random.Random) -> str:
    """``text`` with the sentence and word noise of ``cfg`` (a :class:`NoiseConfig`)."""
    sentences = sentence_noise(sentences_of(text), cfg.sentence_shuffle, cfg.sentence_drop, rng)
    words = " ".join(sentences).split()
    return " ".join(local_shuffle(word_drop(words, cfg.word_drop, rng), cfg.shuffle_window, rng))


class Neighbours:
    """Each token's nearest other token by cosine of the input embeddings, computed for the ids asked for."""

    def __init__(self, embeddings: torch.Tensor, chunk: int = 1024):
        self.unit = F.normalize(embeddings.detach().float(), dim=-1)
        self.chunk = chunk
        self.table: dict[int, int] = {}

    def __call__(self, ids: Sequence[int]) -> list[int]:
        missing = sorted({i for i in ids if i not in self.table})
        for start in range(0, len(missing), self.chunk):
            part = torch.tensor(missing[start:start + self.chunk])
            scores = self.unit[part] @ self.unit.T
            scores[torch.arange(len(part)), part] = -2.0  # not the token itself
            self.table.update(zip(part.tolist(), scores.argmax(-1).tolist()))
        return [self.table[i] for i in ids]


class SourceNoise:
    """The training-batch hook of noisy self-distillation: each row's prompt rebuilt from a noisy source for the
    student, the clean batch kept for the teacher (``teacher_*`` keys)."""

    def __init__(self, cfg, examples: list, encoder: Encoder, pad: int, seed: int, neighbours: Neighbours | None,
                 decoder_start: int | None = None):
        self.cfg, self.examples, self.encoder, self.pad, self.seed = cfg, examples, encoder, pad, seed
        self.neighbours, self.decoder_start = neighbours, decoder_start

    def prompt(self, index: int, rng: random.Random) -> list[int]:
        """The token ids of example ``index``'s prompt with a noisy source (cut to the prompt budget)."""
        example, cfg, tokenizer = self.examples[index], self.cfg, self.encoder.tokenizer
        if not isinstance(example.prompt, str):  # chat: the last message is the source, the template re-rendered
            *before, (role, content) = example.prompt
            return self.encoder.prompt((*before, (role, noisy_text(content, cfg, rng))))
        source = example.source if example.source is not None else example.prompt
        start = example.prompt.find(source)
        if start < 0:  # a source that is not in the prompt: the whole prompt is noised
            start, source = 0, example.prompt
        head, tail = example.prompt[:start], example.prompt[start + len(source):]
        stripped = head.rstrip()  # the space before the source goes with its first word, as in the whole prompt
        ids = tokenizer(stripped)["input_ids"]
        noisy = tokenizer(head[len(stripped):] + noisy_text(source, cfg, rng), add_special_tokens=False)["input_ids"]
        if self.neighbours is not None and cfg.neighbour_replace > 0:
            swaps = self.neighbours(noisy)
            noisy = [swap if rng.random() < cfg.neighbour_replace else token for token, swap in zip(noisy, swaps)]
        rest = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
        return self.encoder.cut(list(ids) + list(noisy) + list(rest))

    def __call__(self, batch: dict, student, where: tuple) -> dict:
        prompts, completions = split_batch(batch)
        noisy = [self.prompt(index, random.Random(seed_of(self.seed, "noise", *where, index)))
                 for index in batch["index"].tolist()]
        student_batch = layout(noisy, completions, self.pad, batch["input_ids"].device, self.decoder_start)
        for key in ("input_ids", "attention_mask", "position_ids"):
            if key in batch:  # an encoder-decoder's batch has no positions
                student_batch[f"teacher_{key}"] = batch[key]
        student_batch["index"] = batch["index"]
        return student_batch


class TeacherDropout:
    """A teacher forward with inverted dropout on every block's update (the teacher noise), for one call:
    h_out = h_in + dropout_p(block(h_in) − h_in), the residual stream itself kept."""

    def __init__(self, p: float, forward):
        self.p, self.forward = p, forward

    def __call__(self, capture, batch):
        _, _, blocks = find_layers(capture.model)

        def drop(module, args, kwargs, output):
            hidden = args[0] if args else kwargs.get("hidden_states")
            out = output[0] if isinstance(output, tuple) else output
            if not isinstance(hidden, torch.Tensor) or hidden.shape != out.shape:
                raise RuntimeError(f"teacher dropout: {type(module).__name__} was not called with its hidden states "
                                   f"first; its update cannot be told from its input")
            noisy = hidden + F.dropout(out - hidden, self.p, training=True)
            return (noisy, *output[1:]) if isinstance(output, tuple) else noisy

        handles = [block.register_forward_hook(drop, with_kwargs=True) for block in blocks]
        try:
            return self.forward(capture, batch)
        finally:
            for handle in handles:
                handle.remove()
