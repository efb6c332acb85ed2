"""``student.init: pretrained``: a trained model as it is, with its own tokenizer (which may differ from the
teacher's: token-level losses then read the teacher on the student's renumbered tokens, see :mod:`kdkit.vocab`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from kdkit.students import StudentBuilder, StudentContext, register


@register
class Pretrained(StudentBuilder):
    name = "pretrained"

    def check(self, cfg) -> None:
        if not cfg.model:
            raise ValueError("student.init 'pretrained' needs student.model")

    def build(self, cfg, ctx: StudentContext) -> tuple[nn.Module, Any]:
        return ctx.load_pretrained(cfg.model, "student.model")
