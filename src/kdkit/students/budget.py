"""A student that fits a size budget (``kdkit compress``): how many of the teacher's blocks it keeps and what share of
its word-embedding parameters the block-wise factors get.

The rule: the deepest student (teacher blocks evenly spaced, first and last kept) whose word embedding, compressed
to what the budget leaves after the blocks, heads and other embeddings, still keeps at least
``min_embedding_fraction`` of its parameters; an embedding the budget can hold whole is not compressed. Depth goes
first because removing blocks loses more than factorising the embedding does at moderate ratios (DiscBlock keeps
LM perplexity within a few points at 20x on the embedding alone, where half the blocks gone costs far more).
Sizes are counted on the teacher itself (blocks of one depth have one size), so a plan is an upper bound: the
factors' ranks are rounded down to fit.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from torch import nn

from kdkit.capture import find_layers
from kdkit.errors import ConfigError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
BYTES_PER_PARAMETER = 4  # float32, as exported


def parse_budget(params: str | None, size: str | None, teacher_parameters: int) -> int:
    """The budget in parameters from ``--params`` (a count, or a percentage of the teacher's) or ``--bytes``
    (``20MB``, ``1.5GiB``; float32 parameters); a one-line error naming the flag otherwise."""
    if (params is None) == (size is None):
        raise ConfigError("give the budget as one of --params (e.g. 15% or 5000000) or --bytes (e.g. 20MB)")
    if params is not None:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", params)
        if not match or float(match[1]) <= 0 or (match[2] and float(match[1]) > 100):
            raise ConfigError(f"--params {params!r}: give a positive parameter count or a percentage in (0, 100]")
        value = float(match[1])
        return int(teacher_parameters * value / 100) if match[2] else int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", size)
    if not match or match[2].lower() not in _UNITS or float(match[1]) <= 0:
        raise ConfigError(f"--bytes {size!r}: give a positive size such as 20MB, 500KB or 1.5GiB")
    return int(float(match[1]) * _UNITS[match[2].lower()] / BYTES_PER_PARAMETER)


@dataclass
class Plan:
    budget: int
    teacher_parameters: int
    layers: list[int]
    embedding_fraction: float | None  # None: the embedding fits whole
    parameters: int  # at most this many (the factors' ranks round down)

    def as_dict(self) -> dict:
        return asdict(self)


def evenly_spaced(depth: int, keep: int) -> list[int]:
    """``keep`` of ``depth`` block indices, first and last included, evenly spaced between."""
    if keep == 1:
        return [0]
    return sorted({round(i * (depth - 1) / (keep - 1)) for i in range(keep)})


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def plan_student(teacher: nn.Module, budget: int, min_embedding_fraction: float = 0.05) -> Plan:
    """The deepest teacher-block student whose compressed word embedding keeps ≥ ``min_embedding_fraction`` of its
    parameters under ``budget``; ``ConfigError`` when even one block does not fit."""
    total = _count(teacher)
    _, _, blocks = find_layers(teacher)
    per_block = _count(blocks[0])
    embedding = teacher.get_input_embeddings().weight.numel()
    for keep in range(len(blocks), 0, -1):
        rest = total - (len(blocks) - keep) * per_block - embedding  # blocks kept, heads, other embeddings
        room = budget - rest
        if room >= embedding:
            return Plan(budget, total, evenly_spaced(len(blocks), keep), None, rest + embedding)
        if room >= min_embedding_fraction * embedding:
            fraction = room / embedding
            return Plan(budget, total, evenly_spaced(len(blocks), keep), fraction, rest + int(fraction * embedding))
    smallest = total - (len(blocks) - 1) * per_block - embedding + int(min_embedding_fraction * embedding)
    raise ConfigError(f"a budget of {budget:,} parameters is below the smallest student this teacher gives "
                      f"({smallest:,}: one block and {min_embedding_fraction:.0%} of the word embedding)")
