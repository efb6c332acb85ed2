"""Live teacher signals: a frozen teacher run on each batch.

The teacher is put in eval mode, its parameters stop requiring gradients and every forward runs under
``torch.no_grad``, so it never enters the optimiser, the autograd graph or gradient synchronisation.
"""

from __future__ import annotations

import torch
from torch import nn

from kdkit.capture import Capture, Representations


def teacher_inputs(batch: dict) -> dict:
    """The teacher's view of a batch: its own token ids when its tokenizer differs, else the student's."""
    if "teacher_input_ids" in batch:
        return {"input_ids": batch["teacher_input_ids"], "attention_mask": batch["teacher_attention_mask"]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _default_forward(capture: Capture, batch: dict) -> Representations:
    return capture(**teacher_inputs(batch))


class LiveTeacher:
    """Runs the frozen teacher on each batch and returns its :class:`Representations`; ``forward(capture, batch)``
    says how the task calls a model on a batch (default: the teacher's view of ``input_ids``/``attention_mask``)."""

    def __init__(self, model: nn.Module, forward=_default_forward, **capture_kwargs):
        self.model = model.eval().requires_grad_(False)
        self.capture = Capture(self.model, **capture_kwargs)
        self.forward = forward

    def to(self, device: torch.device | str) -> "LiveTeacher":
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, batch: dict) -> Representations:
        return self.forward(self.capture, batch)
