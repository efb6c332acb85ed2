"""Token ids and batches of the generation task: prompts cut to a budget, completions ended by EOS, one layout.

**Encoding** (:class:`Encoder`): a text prompt is tokenised as the tokenizer does by default (its BOS, if it adds
one); chat messages go through the tokenizer's chat template with the generation prompt. A prompt longer than
``max_prompt_length`` tokens keeps its first ``max_prompt_length − prompt_tail`` tokens and its last
``prompt_tail``: the end of a prompt usually holds the instruction (``"\\nHeadline:"``), which a plain cut would
drop. The completion is tokenised without special tokens, cut to ``max_completion_length − 1`` tokens and ended
with EOS, so the model learns where to stop.

**Layout** (:func:`layout`): each row is ``[left padding] prompt completion [right padding]``: prompts end at one
column P and completions start there, so the K = C + 1 last logit positions (P − 1 … P + C − 1, C the longest
completion) are the only ones any loss reads; models are called with ``logits_to_keep = K``, which spares the
vocabulary projection of every prompt position (a 49k-token head costs as much as several blocks). Positions count
real tokens only (``position_ids``), so left padding does not shift a prompt. ``labels`` ``(B, K)`` hold the token
each kept position must predict (-100 where none) and ``signal_mask`` the same positions as 0/1, which is where a
teacher cache stores and reads the teacher's top-k distribution.

**Encoder-decoders** (``AutoModelForSeq2SeqLM``, :func:`layout` with ``decoder_start``): the prompt is the encoder's
input (right-padded), the decoder reads the start token then the completion but its last token; ``labels`` ``(B, C)``
are the completion, -100 at padding, and the decoder's C logit positions are all read.

**On-policy batches** (:class:`OnPolicy`, GKD): with probability λ a batch's completions are replaced by the
student's samples for its prompts; coin and samples are seeded by (seed, optimiser step, micro-batch, process), so
a rerun or a resumed run draws the same batches, and the global random state is left as it was.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import torch

from kdkit.errors import ModelError
from kdkit.tasks.generation.data import Example


class Encoder:
    """Token ids of examples under one tokenizer and the task's length budget (see the module docstring)."""

    def __init__(self, tokenizer, max_prompt_length: int, prompt_tail: int, max_completion_length: int,
                 seq2seq: bool = False):
        if tokenizer.eos_token_id is None:
            raise ModelError(f"the tokenizer ({type(tokenizer).__name__}) has no EOS token, which ends every "
                             f"completion; give a model whose tokenizer defines eos_token")
        self.tokenizer = tokenizer
        self.max_prompt, self.tail = max_prompt_length, min(prompt_tail, max_prompt_length)
        self.max_completion = max_completion_length
        self.seq2seq = seq2seq

    def prompt(self, prompt: str | tuple) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt)["input_ids"]
        else:
            if not getattr(self.tokenizer, "chat_template", None):
                raise ModelError(f"chat examples need a tokenizer with a chat template; "
                                 f"{type(self.tokenizer).__name__} has none (use prompt/completion examples)")
            ids = self.tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in prompt],
                                                     add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        return self.cut(ids)

    def cut(self, ids: Sequence[int]) -> list[int]:
        """Prompt ids within ``max_prompt_length``: the head and the last ``prompt_tail`` tokens of a longer one."""
        if len(ids) <= self.max_prompt:
            return list(ids)
        head = self.max_prompt - self.tail
        return list(ids[:head]) + (list(ids[-self.tail:]) if self.tail else [])

    def completion(self, completion: str) -> list[int]:
        ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"][:self.max_completion - 1]
        return list(ids) + [self.tokenizer.eos_token_id]

    def rows(self, examples: Sequence[Example]) -> dict[str, list]:
        """Dataset columns: ``prompt`` and ``completion`` ids, and what keys and sizes the teacher cache's entries:
        ``input_ids``/``attention_mask`` as the batch gives them to the teacher (a causal LM's whole sequence, an
        encoder-decoder's prompt) and ``signal_mask`` (1 per completion token: the positions that predict one)."""
        columns: dict[str, list] = {"prompt": [], "completion": [], "input_ids": [], "attention_mask": [],
                                    "signal_mask": []}
        for example in examples:
            prompt, completion = self.prompt(example.prompt), self.completion(example.completion)
            columns["prompt"].append(prompt)
            columns["completion"].append(completion)
            keyed = prompt if self.seq2seq else prompt + completion
            columns["input_ids"].append(keyed)
            columns["attention_mask"].append([1] * len(keyed))
            columns["signal_mask"].append([1] * len(completion) if self.seq2seq else
                                          [0] * (len(prompt) - 1) + [1] * len(completion) + [0])
        return columns


def decoder_start_of(model) -> int | None:
    """An encoder-decoder's decoder start token (its batches take the encoder-decoder layout); None for a causal LM."""
    config = model.config
    return config.decoder_start_token_id if config.is_encoder_decoder else None


def pad_token_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def layout(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad: int,
           device: torch.device | str = "cpu", decoder_start: int | None = None) -> dict[str, torch.Tensor]:
    """One batch in the task's layout (see the module docstring); every prompt has at least one token. With
    ``decoder_start`` (an encoder-decoder's start token) the encoder-decoder layout."""
    if any(len(p) == 0 for p in prompts):
        raise ModelError("an empty prompt has no position to predict its completion from")
    if decoder_start is not None:
        return _seq2seq_layout(prompts, completions, pad, decoder_start, device)
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    rows = len(prompts)
    ids = torch.full((rows, width_p + width_c), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full((rows, width_c + 1), -100, dtype=torch.long)
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        start, end = width_p - len(prompt), width_p + len(completion)
        ids[i, start:width_p] = torch.tensor(prompt, dtype=torch.long)
        ids[i, width_p:end] = torch.tensor(completion, dtype=torch.long)
        mask[i, start:end] = 1
        labels[i, :len(completion)] = torch.tensor(completion, dtype=torch.long)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    batch = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels,
             "signal_mask": (labels != -100).long()}
    return {key: value.to(device) for key, value in batch.items()}


def _padded(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


def _seq2seq_layout(prompts, completions, pad: int, decoder_start: int, device) -> dict[str, torch.Tensor]:
    ids, mask = _padded(prompts, pad)
    decoder_ids, decoder_mask = _padded([[decoder_start, *c[:-1]] for c in completions], pad)
    labels = _padded(completions, -100)[0]
    batch = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids,
             "decoder_attention_mask": decoder_mask, "labels": labels, "signal_mask": (labels != -100).long()}
    return {key: value.to(device) for key, value in batch.items()}


class GenerationCollator:
    """Dataset rows with ``prompt`` and ``completion`` ids → a batch in the task's layout (the encoder-decoder one
    with ``decoder_start``)."""

    def __init__(self, pad_token_id: int, decoder_start: int | None = None):
        self.pad, self.decoder_start = pad_token_id, decoder_start

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = layout([r["prompt"] for r in rows], [r["completion"] for r in rows], self.pad,
                       decoder_start=self.decoder_start)
        if "index" in rows[0]:  # which examples the rows are (noisy self-distillation rebuilds their prompts)
            batch["index"] = torch.tensor([r["index"] for r in rows], dtype=torch.long)
        return batch


def model_inputs(batch: dict, prefix: str = "") -> dict:
    """What a model is called with on a batch: a causal LM its ids, mask, positions and only the K logit positions
    read; an encoder-decoder its prompt and decoder inputs. ``prefix`` ``teacher_`` reads the teacher's own view of
    the prompt where the batch has one (a clean prompt)."""
    if "decoder_input_ids" in batch:
        return {"input_ids": batch[f"{prefix}input_ids"], "attention_mask": batch[f"{prefix}attention_mask"],
                "decoder_input_ids": batch["decoder_input_ids"],
                "decoder_attention_mask": batch["decoder_attention_mask"]}
    return {key: batch[f"{prefix}{key}"] for key in ("input_ids", "attention_mask", "position_ids")} | {
        "logits_to_keep": batch["labels"].shape[1]}


def split_batch(batch: dict) -> tuple[list[list[int]], list[list[int]]]:
    """The prompts and completions of a batch in the task's layout, unpadded."""
    seq2seq = "decoder_input_ids" in batch
    width_p = batch["input_ids"].shape[1] - (0 if seq2seq else batch["labels"].shape[1] - 1)
    ids, mask = batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    prompts = [[t for t, m in zip(row[:width_p], keep[:width_p]) if m] for row, keep in zip(ids, mask)]
    completions = [[t for t in row if t != -100] for row in batch["labels"].tolist()]
    return prompts, completions


def seed_of(*parts) -> int:
    """A 63-bit seed from any values (the same on every platform and Python run)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def generated_tokens(model, out: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """The new tokens of ``model.generate``'s output: after the prompt (a causal LM), after the decoder's start
    token (an encoder-decoder)."""
    return out[:, 1:] if model.config.is_encoder_decoder else out[:, prompt_width:]


def ended(tokens: Sequence[int], eos: int) -> list[int]:
    """Generated tokens up to and including the first EOS (all of them when there is none)."""
    tokens = list(tokens)
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


class OnPolicy:
    """GKD's on-policy batches (Agarwal et al., ICLR 2024): with probability ``fraction`` (λ) a training batch's
    completions are replaced by the student's own samples (``temperature``, at most ``max_new_tokens``), which the
    teacher then scores; see the module docstring for the seeding."""

    def __init__(self, fraction: float, seed: int, max_new_tokens: int, temperature: float, pad_token_id: int,
                 eos_token_id: int, decoder_start: int | None = None):
        self.fraction, self.seed, self.max_new_tokens = fraction, seed, max_new_tokens
        self.temperature, self.pad, self.eos = temperature, pad_token_id, eos_token_id
        self.decoder_start = decoder_start
        self.sampled = 0  # batches replaced so far (logged by tests and benchmarks)

    def __call__(self, batch: dict, student, where: tuple) -> dict:
        if random.Random(seed_of(self.seed, "coin", *where)).random() >= self.fraction:
            return batch
        prompts, _ = split_batch(batch)
        completions = self.sample(student, prompts, seed_of(self.seed, "sample", *where))
        self.sampled += 1
        return layout(prompts, completions, self.pad, batch["input_ids"].device, self.decoder_start)

    @torch.no_grad()
    def sample(self, student, prompts: list[list[int]], seed: int) -> list[list[int]]:
        """The student's sampled completions of ``prompts`` (each ended by EOS, or cut at ``max_new_tokens``)."""
        device = next(student.parameters()).device
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[i, width - len(prompt):] = 1
        was_training = student.training
        student.eval()
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                out = student.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                                       temperature=self.temperature, top_k=0, top_p=1.0,
                                       max_new_tokens=self.max_new_tokens, pad_token_id=self.pad,
                                       eos_token_id=self.eos)
        finally:
            student.train(was_training)
        completions = [ended(row, self.eos) for row in generated_tokens(student, out, width).tolist()]
        # a completion needs one token to be trained on; an immediate EOS is one
        return [c if c else [self.eos] for c in completions]
