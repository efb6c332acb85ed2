"""The distillation engine: a thin subclass of ``transformers.Trainer``.

Everything the ecosystem already does — devices, mixed precision, gradient accumulation, distributed data
parallel, DeepSpeed/FSDP, checkpoints and resume, ``report_to`` logging — comes from the Trainer. kdkit adds:

- :class:`DistillationModule`, the trained ``nn.Module``: the student plus the loss terms (which own the
  distillation-only parameters such as projections). Checkpoints hold all of it, so resume restores projections;
  :meth:`DistillationTrainer.export_student` writes the student alone as a plain HF folder.
- a teacher signal source (:class:`~kdkit.signals.LiveTeacher`) kept outside the trained module, so it is not
  optimised, not wrapped by DDP and not saved in checkpoints;
- per-term logging: every term's (unweighted) value is averaged over the logging window and logged as
  ``loss_<term>`` beside the Trainer's ``loss``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from kdkit.capture import Capture, Representations
from kdkit.config import TrainConfig
from kdkit.engine.terms import Needs, Term
from kdkit.errors import ConfigError

STUDENT_INPUTS = ("input_ids", "attention_mask")


@dataclass
class DistillationArguments(TrainingArguments):
    """``TrainingArguments`` with defaults that suit distillation batches (extra teacher columns, ``labels``)."""

    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])
    save_strategy: str = "steps"
    report_to: str | list[str] | None = "none"


def training_arguments(cfg: TrainConfig, output_dir: str | Path, **overrides) -> DistillationArguments:
    """Map a recipe's ``training`` section (plus ``extra``) onto :class:`DistillationArguments`."""
    known = {f.name for f in dataclasses.fields(DistillationArguments)}
    unknown = sorted(set(cfg.extra) - known)
    if unknown:
        raise ConfigError(f"recipe key 'training.extra.{unknown[0]}' is not a TrainingArguments field")
    kwargs = dict(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        weight_decay=cfg.weight_decay,
        # transformers 5 reads a float warmup_steps in [0, 1) as a fraction of all steps
        warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type=cfg.lr_scheduler_type,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to or "none",
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    kwargs.update(cfg.extra)
    kwargs.update(overrides)
    try:
        return DistillationArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"recipe section 'training': {str(err).splitlines()[0]}") from None


class DistillationModule(nn.Module):
    """The student and the loss terms, trained together.

    ``forward(batch, teacher)`` runs the student (capturing what the terms need) and returns
    ``(total, values, logits)``: the weighted sum Σ wᵢ·termᵢ, each term's unweighted value, and the student logits.
    """

    # the loss is a mean over the batch; the Trainer must still divide by gradient-accumulation steps
    accepts_loss_kwargs = False

    def __init__(self, student: nn.Module, terms: list[Term]):
        super().__init__()
        self.student = student
        self.terms = nn.ModuleList(terms)
        needs = Needs()
        for term in terms:
            needs = needs.merge(term.student_needs)
        self._capture = Capture(student, **needs.capture_kwargs())

    def teacher_needs(self) -> Needs:
        needs = Needs()
        for term in self.terms:
            needs = needs.merge(term.teacher_needs)
        return needs

    def forward(self, batch: dict, teacher: Representations | None = None):
        student = self._capture(**{k: batch[k] for k in STUDENT_INPUTS})
        values = {term.name: term(student, teacher, batch) for term in self.terms}
        total = sum(term.weight * values[term.name] for term in self.terms)
        return total, values, student.logits


class DistillationTrainer(Trainer):
    """``transformers.Trainer`` whose loss is the recipe's weighted distillation terms.

    Args:
        model: a :class:`DistillationModule`.
        teacher: a teacher signal source (e.g. :class:`~kdkit.signals.LiveTeacher`), or ``None`` for plain
            fine-tuning with only the ``ce`` term.
        Other arguments are those of ``transformers.Trainer``.
    """

    def __init__(self, model: DistillationModule, args: DistillationArguments, teacher=None, **kwargs):
        super().__init__(model=model, args=args, **kwargs)
        self.teacher = teacher.to(self.args.device) if teacher is not None else None
        # summed as tensors and read at log time only: a per-step .item() would synchronise the GPU every step
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_steps = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher = self.teacher(inputs) if self.teacher is not None else None
        total, values, logits = model(inputs, teacher)
        for name, value in values.items():
            value = value.detach().float()
            self._term_sums[name] = self._term_sums[name] + value if name in self._term_sums else value
        self._term_steps += 1
        return (total, {"logits": logits}) if return_outputs else total

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_steps:
            for name, total in self._term_sums.items():
                logs[f"loss_{name}"] = round(total.item() / self._term_steps, 6)
            self._term_sums.clear()
            self._term_steps = 0
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluate the student alone: cross-entropy and logits (no teacher forward)."""
        inputs = self._prepare_inputs(inputs)
        student = self.accelerator.unwrap_model(model).student
        with torch.no_grad():
            logits = student(**{k: inputs[k] for k in STUDENT_INPUTS}).logits
            loss = F.cross_entropy(logits, inputs["labels"])
        if prediction_loss_only:
            return loss, None, None
        return loss, logits, inputs["labels"]

    def export_student(self, output_dir: str | Path, tokenizer=None) -> Path:
        """Write the student alone as a plain HF folder (no projections, probes or other training-only parts)."""
        output_dir = Path(output_dir)
        if self.args.should_save:
            student = self.accelerator.unwrap_model(self.model).student
            student.save_pretrained(output_dir)
            if tokenizer is not None:
                tokenizer.save_pretrained(output_dir)
        return output_dir
