"""Map a student's token ids onto a teacher's vocabulary, so token-level losses apply across two tokenizers.

Two tokenizers can split text into the same word pieces and still number them differently: MPNet's vocabulary
is BERT-uncased's with four special tokens in front (``<s>``, ``<pad>``, ``</s>``, ``<unk>``), so MiniLM's
(BERT's) id 2023 is MPNet's 2027, and their sentence markers differ ([CLS]/[SEP] vs <s>/</s>). kdkit never
assumes an offset: it builds a table from the two vocabularies,

- special tokens by their role (the student's ``cls_token`` becomes the teacher's ``cls_token``, and so on for
  sep, pad, unk, mask, bos, eos), because their strings differ;
- every other token by its string (the same word piece has the same spelling in both),

and gives the teacher ``table[student_ids]``. The teacher then sees exactly the student's positions, one for
one, so hidden-state, relation and attention losses compare the same token at the same index.
:func:`alignment_rate` reports how often that mapped sequence equals what the teacher's own tokenizer makes of
the text (100% for MiniLM → MPNet on Rotten Tomatoes); a student token with no teacher counterpart is an error
naming the token.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kdkit.errors import ModelError

SPECIAL_ROLES = ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token", "bos_token", "eos_token")
UNMAPPED = -1


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two tokenizers map the same strings to the same ids (then one set of token ids serves both models)."""
    return a is b or a.get_vocab() == b.get_vocab()


def _special_ids(tokenizer: Any) -> dict[str, int]:
    ids = {}
    for role in SPECIAL_ROLES:
        token = getattr(tokenizer, role, None)
        if token is not None:
            ids[role] = tokenizer.convert_tokens_to_ids(str(token))
    return ids


def vocabulary_map(student_tokenizer: Any, teacher_tokenizer: Any) -> np.ndarray:
    """``table[student_id] = teacher_id``: special tokens matched by role, the others by string; ``-1`` where
    the teacher has no such token. Shape ``(max student id + 1,)``, int64."""
    student_vocab = student_tokenizer.get_vocab()
    teacher_vocab = teacher_tokenizer.get_vocab()
    table = np.full(max(student_vocab.values()) + 1, UNMAPPED, dtype=np.int64)
    for token, student_id in student_vocab.items():
        table[student_id] = teacher_vocab.get(token, UNMAPPED)
    student_special, teacher_special = _special_ids(student_tokenizer), _special_ids(teacher_tokenizer)
    for role, student_id in student_special.items():
        if role in teacher_special:  # by role, not string: [CLS] is MPNet's <s>, even though "[CLS]" exists there
            table[student_id] = teacher_special[role]
    return table


def map_ids(table: np.ndarray, ids: Sequence[int], student_tokenizer: Any = None) -> list[int]:
    """The teacher ids of one student sequence; a :class:`ModelError` names the first token without one."""
    array = np.asarray(ids, dtype=np.int64)
    if array.size and array.max() >= len(table):
        raise ModelError(f"student token id {int(array.max())} is outside its own vocabulary ({len(table)} ids)")
    mapped = table[array]
    missing = np.flatnonzero(mapped == UNMAPPED)
    if missing.size:
        token_id = int(array[missing[0]])
        token = student_tokenizer.convert_ids_to_tokens(token_id) if student_tokenizer is not None else "?"
        raise ModelError(f"the student's token {token!r} (id {token_id}) has no counterpart in the teacher's "
                         f"vocabulary, so token positions cannot be aligned; use logit losses (ce, kd, soft_ce, "
                         f"logit_mse) or a student with the teacher's tokenizer")
    return mapped.tolist()


def alignment_rate(mapped: Sequence[Sequence[int]], teacher_own: Sequence[Sequence[int]]) -> float:
    """The fraction of sequences whose mapped ids equal the teacher tokenizer's own ids for the same text."""
    if not mapped:
        return 1.0
    return sum(list(a) == list(b) for a, b in zip(mapped, teacher_own)) / len(mapped)
