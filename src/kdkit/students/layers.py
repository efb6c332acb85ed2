"""``student.init: teacher_layers``: a copy of the teacher keeping a subset of its blocks (DistilBERT-style)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn
from transformers import PreTrainedModel

from kdkit.capture import find_layers
from kdkit.errors import ModelError
from kdkit.students import StudentBuilder, StudentContext, register

# Config entries holding one value per block; they follow the blocks when a student keeps a subset.
PER_LAYER_KEYS = ("layer_types", "no_rope_layers")


def student_from_teacher_layers(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A student initialised from teacher blocks ``layers`` (Sanh et al. 2019, DistilBERT: every other layer).

    The teacher is deep-copied, so no parameter is shared and the teacher is unchanged. Embeddings, heads
    and the kept blocks (0-based, strictly increasing) keep their weights; config.num_hidden_layers and the
    per-layer config lists follow, and ``layer_idx`` attributes (KV-cache slots) are renumbered 0..len-1.
    """
    _, _, blocks = find_layers(teacher)
    layers = list(layers)
    valid = f"valid: strictly increasing indices in 0..{len(blocks) - 1}"
    if not layers:
        raise ModelError(f"student layers {layers} is empty; {valid}")
    for index in layers:
        if not isinstance(index, int) or not 0 <= index < len(blocks):
            raise ModelError(f"student layers {layers}: {index!r} is not a teacher block; {valid}")
    if any(a >= b for a, b in zip(layers, layers[1:])):
        raise ModelError(f"student layers {layers} are not strictly increasing; {valid}")

    student = copy.deepcopy(teacher)
    parent, attribute, blocks = find_layers(student)
    kept = nn.ModuleList(blocks[i] for i in layers)
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    setattr(parent, attribute, kept)

    config = student.config.get_text_config()
    for key in PER_LAYER_KEYS:
        values = getattr(config, key, None)
        if isinstance(values, (list, tuple)) and len(values) == len(blocks):
            setattr(config, key, [values[i] for i in layers])
    config.num_hidden_layers = len(layers)
    return student



@register
class TeacherLayers(StudentBuilder):
    """Teacher blocks ``student.layers`` (0-based), embeddings and head copied; the teacher's tokenizer."""

    name = "teacher_layers"

    def check(self, cfg) -> None:
        if not cfg.layers:
            raise ValueError("student.init 'teacher_layers' needs student.layers, e.g. [0, 2, 4]")

    def needs_teacher(self, cfg) -> bool:
        return True

    def build(self, cfg, ctx: StudentContext) -> tuple[nn.Module, object]:
        return student_from_teacher_layers(ctx.teacher, cfg.layers), ctx.teacher_tokenizer
