"""Layer alignment between a teacher with N transformer blocks and a student with M.

A :data:`LayerMap` is a list of ``(teacher_index, student_index)`` pairs into ``hidden_states``, where index 0 is
the embedding output and index ``l`` the output of block ``l``, so valid indices are ``0..N`` and ``0..M``.
Generated maps assume a student no deeper than its teacher (``1 <= M <= N``); where ``N/M`` is not an integer the
teacher index is rounded down.
"""

import math
from collections.abc import Sequence

from kdkit.errors import ConfigError

LayerMap = list[tuple[int, int]]


def _check_depths(n_teacher: int, n_student: int) -> None:
    if not (isinstance(n_teacher, int) and n_teacher >= 1):
        raise ConfigError(f"n_teacher {n_teacher!r} must be a positive number of layers")
    if not (isinstance(n_student, int) and 1 <= n_student <= n_teacher):
        raise ConfigError(f"n_student {n_student!r} must be a number of layers in 1..{n_teacher} (n_teacher)")


def explicit(pairs: Sequence[Sequence[int]], n_teacher: int, n_student: int) -> LayerMap:
    """The given ``(teacher, student)`` pairs, in order, after checking each index is in range."""
    layer_map = []
    for pair in pairs:
        if not (isinstance(pair, Sequence) and len(pair) == 2 and all(isinstance(i, int) for i in pair)):
            raise ConfigError(f"layer map pair {pair!r} must be two integers (teacher, student)")
        teacher, student = pair
        if not 0 <= teacher <= n_teacher:
            raise ConfigError(f"layer map pair {tuple(pair)}: teacher index {teacher} is outside 0..{n_teacher}")
        if not 0 <= student <= n_student:
            raise ConfigError(f"layer map pair {tuple(pair)}: student index {student} is outside 0..{n_student}")
        layer_map.append((teacher, student))
    return layer_map


def uniform(n_teacher: int, n_student: int, include_embedding: bool = False) -> LayerMap:
    """TinyBERT's uniform map (Jiao et al. 2020): student layer ``m`` <- teacher layer ``g(m) = m·N/M``,
    ``m = 1..M``; ``include_embedding`` adds ``(0, 0)`` for the embedding loss.
    """
    _check_depths(n_teacher, n_student)
    first = 0 if include_embedding else 1
    return [(m * n_teacher // n_student, m) for m in range(first, n_student + 1)]


def skip(n_teacher: int, n_student: int) -> LayerMap:
    """PKD-skip (Sun et al. 2019): ``m = 1..M−1`` <- teacher ``m·N/M`` (12 -> 6: teacher 2, 4, 6, 8, 10).

    The last layer is left to the KD term on the logits, as in the paper.
    """
    _check_depths(n_teacher, n_student)
    return [(m * n_teacher // n_student, m) for m in range(1, n_student)]


def last_k(n_teacher: int, n_student: int) -> LayerMap:
    """PKD-last (Sun et al. 2019): ``m = 1..M−1`` <- teacher ``N−M+m`` (12 -> 6: teacher 7..11)."""
    _check_depths(n_teacher, n_student)
    return [(n_teacher - n_student + m, m) for m in range(1, n_student)]


def emb_skip(n_teacher: int, n_student: int) -> LayerMap:
    """CKD's "emb+skip" map (Park et al. 2021): with ``g = gcd(N, M)``, teacher ``0, N/g, …, N`` <-> student
    ``0, M/g, …, M`` (12 -> 6: teacher 0, 2, …, 12 <-> student 0..6).
    """
    _check_depths(n_teacher, n_student)
    g = math.gcd(n_teacher, n_student)
    return [(k * n_teacher // g, k * n_student // g) for k in range(g + 1)]


_GENERATED = {"uniform": uniform, "skip": skip, "last_k": last_k, "emb_skip": emb_skip}
LAYER_MAP_KINDS = ("pairs", *_GENERATED)


def build_layer_map(
    kind: str, n_teacher: int, n_student: int, pairs: Sequence[Sequence[int]] | None = None
) -> LayerMap:
    """Layer map of the given ``kind`` (one of :data:`LAYER_MAP_KINDS`); ``pairs`` only with ``kind="pairs"``."""
    if kind not in LAYER_MAP_KINDS:
        raise ConfigError(f"layer map kind {kind!r} is not one of {', '.join(LAYER_MAP_KINDS)}")
    if kind == "pairs":
        if pairs is None:
            raise ConfigError("layer map kind 'pairs' needs pairs: a list of (teacher, student) indices")
        return explicit(pairs, n_teacher, n_student)
    if pairs is not None:
        raise ConfigError(f"layer map pairs are only used with kind 'pairs', not with kind {kind!r}")
    return _GENERATED[kind](n_teacher, n_student)
