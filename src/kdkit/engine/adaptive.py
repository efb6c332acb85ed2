"""Training a width- and depth-adaptive student (DynaBERT, Hou et al. NeurIPS 2020): every optimiser step runs the
recipe's losses on each sub-network (``student.adaptive``: widths × depths) and sums them, as DynaBERT accumulates
the gradients of all widths (width stage) or of all widths at every depth (depth stage) before one update.

A sub-network that drops layers exposes its hidden states at the indices of the full network's hidden states they
stand for, as DynaBERT's released code pairs them (``kept_layers_index``): a kept block stands for itself and the
blocks dropped after it, so its output takes the index of the output of the last block of that span — the input
index of the next kept block, or the network's last index for the last kept block — and the other entries are
``None``. Layer-paired losses skip the pairs whose student entry is ``None``. With depth 0.5 of 6 blocks (blocks 0,
2, 4 kept) the student's hidden states 0..3 (embeddings, after block 0, 2, 4) are matched with the teacher's 0, 2,
4, 6: the sub-network's last hidden state, the one its classifier reads, with the teacher's last.
"""

from __future__ import annotations

import torch

from kdkit.capture import Representations
from kdkit.engine.trainer import DistillationModule
from kdkit.students.adaptive import kept_layers, sub_network
from kdkit.terms import Term


def span_ends(kept: list[int], n_layers: int) -> list[int]:
    """The full network's hidden-state index each kept block's output stands for (index ``l + 1`` is block ``l``'s
    output): the end of the span of blocks it replaces, i.e. the next kept block's input index, ``n_layers`` for the
    last. DynaBERT's ``kept_layers_index[1:]``: ``[0, 2, 4]`` of 6 → ``[2, 4, 6]``; all kept → ``[1, ..., n]``."""
    return [*kept[1:], n_layers]


def full_index(reps: Representations, kept: list[int], n_layers: int) -> Representations:
    """``reps`` of a sub-network keeping blocks ``kept`` (of ``n_layers``, block 0 among them) with its hidden
    states placed at the full network's indices they stand for (:func:`span_ends`), ``None`` elsewhere (attention
    maps are not compared under ``student.adaptive``: the recipe refuses such losses)."""
    if len(kept) == n_layers or reps.hidden_states is None:
        return reps
    hidden: list = [reps.hidden_states[0]] + [None] * n_layers
    for j, index in enumerate(span_ends(kept, n_layers)):
        hidden[index] = reps.hidden_states[j + 1]
    reps.hidden_states = tuple(hidden)
    return reps


class AdaptiveDistillationModule(DistillationModule):
    """:class:`~kdkit.engine.trainer.DistillationModule` over every sub-network of ``sub_networks`` ((width, depth)
    pairs, the full network first): the total is the sum of each sub-network's weighted terms; each term's logged
    value is its mean over the sub-networks; the logits returned are the full network's."""

    def __init__(self, student: torch.nn.Module, terms: list[Term], sub_networks: list[tuple[float, float]],
                 **kwargs):
        super().__init__(student, terms, **kwargs)
        self.sub_networks = list(sub_networks)
        self.n_layers = student.config.num_hidden_layers

    def forward(self, batch: dict, teacher: Representations | None = None,
                step_units: dict[str, torch.Tensor] | None = None):
        total, sums, logits = 0.0, {}, None
        for width, depth in self.sub_networks:
            with sub_network(self.student, width, depth):
                student = self.student_forward(batch)
            student = full_index(student, kept_layers(self.n_layers, depth), self.n_layers)
            part, values = self.weighted(student, teacher, batch, step_units)
            total = total + part
            for name, value in values.items():
                sums[name] = sums[name] + value if name in sums else value
            if logits is None:
                logits = student.logits
        return total, {name: value / len(self.sub_networks) for name, value in sums.items()}, logits
