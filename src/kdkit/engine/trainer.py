"""The distillation engine: a thin subclass of ``transformers.Trainer``.

Everything the ecosystem already does — devices, mixed precision, gradient accumulation, distributed data
parallel, DeepSpeed/FSDP, checkpoints and resume, ``report_to`` logging — comes from the Trainer. kdkit adds:

- :class:`DistillationModule`, the trained ``nn.Module``: the student plus the loss terms (which own the
  distillation-only parameters such as projections). Checkpoints hold all of it, so resume restores projections;
  :meth:`DistillationTrainer.export_student` writes the student alone as a plain HF folder.
- a teacher signal source (:class:`~kdkit.signals.LiveTeacher`) kept outside the trained module, so it is not
  optimised, not wrapped by DDP and not saved in checkpoints;
- per-term logging: every term's (unweighted) value is averaged over the logging window and logged as
  ``loss_<term>`` beside the Trainer's ``loss``, with whatever a term's ``extra_logs()`` reports (RW-KD's λ);
- numerical faults: a NaN or infinite term stops the run with a message naming the term and the step, before
  its update is applied or saved (or, with ``nonfinite="skip"``, the batch adds no gradient);
- atomic checkpoints: each ``checkpoint-N`` is written under a staging name and renamed into place when complete,
  and resume takes the newest complete one (:mod:`kdkit.engine.checkpoints`). With the RNG states, the data
  position, optimiser and scheduler restored by the Trainer, a resumed run ends where an uninterrupted one does;
  one resumed from its final checkpoint (killed while evaluating) takes no further step;
- training's wall time summed over resumes (:attr:`DistillationTrainer.train_seconds`, the report's ``train_seconds``),
  kept in the checkpoints' ``trainer_state.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import gc
import itertools
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState, ProgressCallback
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from kdkit.capture import Capture, Representations
from kdkit.config import TrainConfig
from kdkit.engine.checkpoints import STAGING_DIR, checkpoints, commit, last_complete_checkpoint
from kdkit.errors import ConfigError, NumericalError
from kdkit.progress import interactive, progress
from kdkit.students.embedding import save_with_code
from kdkit.terms import Needs, Term, count_units

logger = logging.getLogger(__name__)


@dataclass
class DistillationArguments(TrainingArguments):
    """``TrainingArguments`` with defaults that suit distillation batches (extra teacher columns, ``labels``)."""

    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])
    save_strategy: str = "steps"
    report_to: str | list[str] | None = "none"
    # every loss term is checked in DistillationTrainer.compute_loss, so the loss reaching the Trainer is finite;
    # its own NaN filter would only add a second host-device synchronisation per step
    logging_nan_inf_filter: bool = False
    nonfinite: str = field(default="stop", metadata={"help": "On a NaN/inf loss term: 'stop' or 'skip' the batch."})
    max_consecutive_nonfinite: int = field(default=10, metadata={"help": "With 'skip': stop at this many in a row."})

    def __post_init__(self):
        super().__post_init__()
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"nonfinite must be 'stop' or 'skip', not {self.nonfinite!r}")
        if self.max_consecutive_nonfinite < 1:
            raise ValueError(f"max_consecutive_nonfinite must be at least 1, not {self.max_consecutive_nonfinite}")


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
        nonfinite=cfg.nonfinite,
        max_consecutive_nonfinite=cfg.max_consecutive_nonfinite,
        dataloader_pin_memory=torch.cuda.is_available(),
        # without a GPU, only use_cpu makes the Trainer join the torchrun/accelerate process group (gloo); otherwise
        # every process of a CPU launch would train alone on the whole data
        use_cpu=not torch.cuda.is_available(),
    )
    kwargs.update(cfg.extra)
    kwargs.update(overrides)
    try:
        return DistillationArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"recipe section 'training': {str(err).splitlines()[0]}") from None


def _default_forward(capture: Capture, batch: dict) -> Representations:
    return capture(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


class DistillationModule(nn.Module):
    """The student and the loss terms, trained together.

    ``forward(batch, teacher, step_units)`` runs the student through the task's ``forward(capture, batch)``
    (capturing what the terms need) and returns ``(total, values, logits)``: the weighted sum Σ wᵢ·sᵢ·termᵢ, each
    term's unweighted value, and the student logits. ``sᵢ`` is the batch's share of the optimiser step's units of
    term i (its examples or tokens over those of every micro-batch and process of the step, see
    :meth:`DistillationTrainer.get_batch_samples`), so a step's loss is the mean over the whole step whatever the
    accumulation or the number of processes; without ``step_units`` (a plain call) ``sᵢ`` is 1.
    """

    # the Trainer need not count labels: DistillationTrainer.get_batch_samples counts the terms' own units
    accepts_loss_kwargs = False

    def __init__(self, student: nn.Module, terms: list[Term], forward=_default_forward):
        super().__init__()
        self.student = student
        self.terms = nn.ModuleList(terms)
        self.units = sorted({term.unit for term in terms})
        needs = Needs()
        for term in terms:
            needs = needs.merge(term.student_needs)
        self._capture = Capture(student, **needs.capture_kwargs())
        self._forward = forward

    def after_optimizer_step(self) -> None:
        """Let terms that follow the student outside the optimiser (an EMA copy) update after a step."""
        for term in self.terms:
            term.after_optimizer_step(self.student)

    def teacher_needs(self) -> Needs:
        needs = Needs()
        for term in self.terms:
            needs = needs.merge(term.teacher_needs)
        return needs

    def student_forward(self, batch: dict) -> Representations:
        return self._forward(self._capture, batch)

    def weighted(self, student: Representations, teacher: Representations | None, batch: dict,
                 step_units: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(Σ wᵢ·sᵢ·termᵢ, {name: termᵢ})`` for the student's representations on ``batch``."""
        values = {term.name: term(student, teacher, batch) for term in self.terms}
        if step_units is None:
            total = sum(term.weight * values[term.name] for term in self.terms)
        else:
            # the share is computed before it multiplies, so it is exactly 1.0 when the batch is the whole step
            share = {unit: count_units(unit, batch) / step_units[unit] for unit in self.units}
            total = sum(term.weight * share[term.unit] * values[term.name] for term in self.terms)
        return total, values

    def forward(self, batch: dict, teacher: Representations | None = None,
                step_units: dict[str, torch.Tensor] | None = None):
        student = self.student_forward(batch)
        total, values = self.weighted(student, teacher, batch, step_units)
        return total, values, student.logits


def tied_duplicates(state_dict: dict[str, torch.Tensor]) -> set[str]:
    """The names of a state dict whose tensor shares its memory with an earlier name (a tied output head)."""
    seen, tied = set(), set()
    for name, tensor in state_dict.items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.device.type != "meta" and where in seen:
            tied.add(name)
        seen.add(where)
    return tied


class _FreezeLongLivedObjects(TrainerCallback):
    """Moves every object alive when training starts (models, tensors' Python wrappers, datasets, the Trainer)
    out of the cyclic garbage collector's reach for the run.

    Autograd creates many short-lived objects per step, which trigger collections; each full collection walks every
    tracked object, and a Trainer keeps far more of them alive than a bare loop. Measured on the overhead benchmark
    (MiniLM-L6, 2 CPU cores): kdkit's step was 1.030x a hand-written loop's; 1.0035x with the collector disabled;
    1.0045x with this freeze. Frozen objects are still freed by reference counting; :meth:`DistillationTrainer.train`
    unfreezes them when training ends, also on an error.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        gc.collect()
        gc.freeze()


class _TrainTime(TrainerCallback, ExportableState):
    """Training's wall time summed over a resumed run's processes: from ``on_train_begin`` to ``on_train_end`` (the
    in-loop evaluations and checkpoint saves included), kept in each checkpoint's ``trainer_state.json``
    (``stateful_callbacks``), so a resumed run adds its time to that of the checkpoint it resumed from; the steps an
    interrupt lost after the last checkpoint do not count. :attr:`seconds` is read after training."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.before = 0.0  # seconds of the processes before this one (from the resumed checkpoint)
        self.start: float | None = None
        self.seconds = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        # the Trainer has loaded the resumed checkpoint's state by now; one written before this callback existed
        # has no entry, which the Trainer's checkpoint save would look up (a KeyError), so it gets one
        name = type(self).__name__
        self.before = float(state.stateful_callbacks.get(name, {}).get("attributes", {}).get("seconds", 0.0))
        self.start = self.clock()
        state.stateful_callbacks[name] = self.state()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = self.elapsed()
        self.start = None

    def elapsed(self) -> float:
        return self.before + (self.clock() - self.start if self.start is not None else 0.0)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"seconds": round(self.elapsed(), 3)}}


class _AfterOptimizerStep(TrainerCallback):
    """Calls :meth:`DistillationModule.after_optimizer_step` after every optimiser step."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.after_optimizer_step()


class _LogProgress(ProgressCallback):
    """The Trainer's progress bars for a log file (standard error not a terminal): a line at most every 30 s
    (:mod:`kdkit.progress`) instead of a carriage-return redraw per step."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = progress(total=state.max_steps)
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.prediction_bar is None and state.is_world_process_zero and eval_dataloader is not None:
            try:
                total = len(eval_dataloader)
            except TypeError:  # an iterable without a length: the Trainer's own callback shows no bar either
                return
            self.prediction_bar = progress(total=total, leave=self.training_bar is None)
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)


class DistillationTrainer(Trainer):
    """``transformers.Trainer`` whose loss is the recipe's weighted distillation terms.

    Args:
        model: a :class:`DistillationModule`.
        teacher: a teacher signal source (e.g. :class:`~kdkit.signals.LiveTeacher`), or ``None`` for plain
            fine-tuning with only the ``ce`` term.
        batch_hook: ``hook(batch, student, where) → batch``, called on each training micro-batch before the
            teacher sees it, ``where`` = (optimiser step, micro-batch of the step, process index), which identify
            the batch however a run is resumed (on-policy distillation samples completions from the student here).
        Other arguments are those of ``transformers.Trainer``.
    """

    # compute_loss normalises by the units of the whole step (get_batch_samples), so the Trainer must not divide
    # by the number of accumulation steps again
    loss_is_scaled_for_ga = True

    def __init__(self, model: DistillationModule, args: DistillationArguments, teacher=None, batch_hook=None,
                 **kwargs):
        super().__init__(model=model, args=args, **kwargs)
        self.batch_hook = batch_hook
        # (optimiser step, micro-batch within it) of the last hooked batch, so a hook can tell micro-batches apart
        self._hook_at: tuple[int, int] | None = None
        if not interactive() and any(type(c) is ProgressCallback for c in self.callback_handler.callbacks):
            self.pop_callback(ProgressCallback)
            self.add_callback(_LogProgress)
        self.add_callback(_AfterOptimizerStep)
        self.add_callback(_FreezeLongLivedObjects)
        self.add_callback(_TrainTime)
        self.teacher = teacher.to(self.args.device) if teacher is not None else None
        # the window's term values, summed on the device and read at log time only
        self._term_names: list[str] = []
        self._term_sum: torch.Tensor | None = None
        self._term_steps = 0
        self._skipped = 0  # non-finite batches skipped in the logging window
        self._bad_streak = 0  # non-finite batches in a row
        self._staging = False  # while True the Trainer's checkpoint writing goes to the staging folder
        self._window_start: tuple[float, int] | None = None  # (time, step) where the logging window began

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's micro-batches of one optimiser step, with the step's units counted over all of them and
        all processes (``{"example": n, "token": n}``): each term's value is weighted by its batch's share, so
        ``batch 8`` = ``accumulation 4 × batch 2`` = ``2 processes × batch 4`` (token-level normalisation)."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        units = self.accelerator.unwrap_model(self.model).units
        if not batches or not units:
            return batches, None
        counts = torch.stack([sum(count_units(unit, b).to(device) for b in batches) for unit in units]).float()
        if self.args.world_size > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return batches, dict(zip(units, counts))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._window_start is None:
            self._window_start = (time.perf_counter(), self.state.global_step)
        if self.batch_hook is not None and model.training:
            step = self.state.global_step
            micro = self._hook_at[1] + 1 if self._hook_at is not None and self._hook_at[0] == step else 0
            self._hook_at = (step, micro)
            inputs = self.batch_hook(inputs, self.accelerator.unwrap_model(model).student,
                                     (step, micro, self.args.process_index))
        teacher = self.teacher(inputs) if self.teacher is not None else None
        total, values, logits = model(inputs, teacher, num_items_in_batch)
        if num_items_in_batch is None:  # no counts (a call outside the training loop): a plain mean per micro-batch
            total = total / getattr(self, "current_gradient_accumulation_steps", 1)
        elif self.args.world_size > 1:
            # DDP averages gradients over processes; each process's share is of the global step already
            total = total * self.args.world_size
        self._term_names = list(values)
        terms = torch.stack([value.detach().float() for value in values.values()])
        # the one host-device synchronisation per batch: a NaN/inf must be caught before its backward, its
        # optimiser step and any checkpoint that would hold them
        if torch.isfinite(terms).all():
            self._bad_streak = 0
            self._term_sum = terms if self._term_sum is None else self._term_sum + terms
            self._term_steps += 1
        else:
            total = self._nonfinite(model, values)
        return (total, {"logits": logits}) if return_outputs else total

    def _nonfinite(self, model, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raise :class:`NumericalError` naming the term and the step, or, when skipping, return a zero loss."""
        self._bad_streak += 1
        if self.args.nonfinite == "skip" and self._bad_streak < self.args.max_consecutive_nonfinite:
            self._skipped += 1
            if self.args.world_size > 1:
                # DDP reduces a gradient for every parameter on every rank: give zeros rather than none
                return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
            # a leaf: nothing reaches the parameters, so a step of skipped batches leaves them and the optimiser
            # state untouched (torch optimisers pass over parameters without a gradient)
            return torch.zeros((), device=self.args.device, requires_grad=True)
        name, value = next((n, v) for n, v in values.items() if not torch.isfinite(v).all())
        streak = ""
        if self.args.nonfinite == "skip":
            streak = f" ({self._bad_streak} non-finite batches in a row, training.max_consecutive_nonfinite)"
        last = last_complete_checkpoint(self.args.output_dir)
        where = (f"the last good checkpoint is {last.name} in {last.parent}" if last is not None
                 else "no checkpoint has been written yet")
        hint = "" if streak else "; training.nonfinite=skip would skip such batches"
        step = self.state.global_step + 1  # the step being computed; checkpoint-N holds the state after step N
        raise NumericalError(f"loss term '{name}' is {float(value.detach())} at step {step}{streak}; {where}{hint}")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            # every process logs here: one gather, as the Trainer does for ``loss``, sums the windows of all ranks
            names = self._term_names
            sums = self._term_sum if self._term_sum is not None else torch.zeros(len(names), device=self.args.device)
            window = torch.cat([sums, sums.new_tensor([self._term_steps, self._skipped])])
            *totals, steps, skipped = nested_gather(window[None], self.args.parallel_mode).sum(0).tolist()
            # the Trainer's ``loss`` counts a skipped batch as 0; the terms average the finite batches only
            if steps:
                for name, total in zip(names, totals):
                    logs[f"loss_{name}"] = round(total / steps, 6)
            if self.args.nonfinite == "skip":
                logs["skipped_batches"] = int(skipped)
            for term in self.accelerator.unwrap_model(self.model).terms:
                logs.update(term.extra_logs())  # this process's window (e.g. RW-KD's λ statistics)
            self._term_sum, self._term_steps, self._skipped = None, 0, 0
            # throughput of the logging window (all processes), beside the Trainer's whole-run figure at the end
            now, step = time.perf_counter(), self.state.global_step
            if self._window_start is not None and step > self._window_start[1]:
                seconds = now - self._window_start[0]
                steps_done = step - self._window_start[1]
                logs["steps_per_second"] = round(steps_done / seconds, 4)
                batch = self._train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
                logs["samples_per_second"] = round(steps_done * batch / seconds, 2)
            self._window_start = (now, step)
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """``Trainer.train``; ``resume_from_checkpoint=True`` resumes from the newest *complete* checkpoint."""
        if resume_from_checkpoint is True:
            # contents are checked here, once: a checkpoint whose weights were corrupted at the same size is passed over
            found = last_complete_checkpoint(self.args.output_dir, hashes=True)
            if found is None:
                raise ConfigError(f"no complete checkpoint to resume from in '{self.args.output_dir}'")
            newer = itertools.takewhile(lambda p: p != found, checkpoints(self.args.output_dir))
            passed_over = [p.name for p in newer]
            if self.is_world_process_zero():
                print(f"[kdkit] resuming from {found}" +
                      (f" (incomplete, passed over: {', '.join(passed_over)})" if passed_over else ""))
            resume_from_checkpoint = str(found)
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            gc.unfreeze()  # undo _FreezeLongLivedObjects

    @property
    def train_seconds(self) -> float:
        """Training's wall time in seconds, summed over a resumed run's processes (:class:`_TrainTime`)."""
        return next(c for c in self.callback_handler.callbacks if isinstance(c, _TrainTime)).seconds

    def _run_epoch(self, *args, **kwargs):
        # the Trainer checks for the last step only after taking one, so a run resumed from its final checkpoint
        # (when that step is not at an epoch's end) would take one step more than the uninterrupted run
        if self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._staging else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, written into ``STAGING_DIR/checkpoint-N`` and renamed into place when complete.

        Rotation (``save_total_limit``) and hub pushes run after the rename, on complete checkpoints only.
        """
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
        if self.args.should_save:
            shutil.rmtree(os.path.join(run_dir, STAGING_DIR), ignore_errors=True)  # an interrupted save's leftovers
        self.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank has written its part (RNG states, shards)
        if self.args.should_save:
            if self.state.best_model_checkpoint == staged:  # the Trainer recorded where it wrote, not where it lands
                self.state.best_model_checkpoint = final
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
            commit(staged, final)
            os.rmdir(os.path.dirname(staged))
            rotate_checkpoints(run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        if self.args.push_to_hub:
            self._push_from_checkpoint(final)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The Trainer's save of the (non-``PreTrainedModel``) module, with tied tensors stored once: safetensors
        refuses two names for one memory (a language model's input embedding and output head). Resume loads the
        state dict with ``strict=False``, so the tie gives the second name its value back."""
        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
            tied = tied_duplicates(state_dict)
            state_dict = {name: tensor for name, tensor in state_dict.items() if name not in tied}
        super()._save(output_dir, state_dict)

    def _issue_warnings_after_load(self, load_result) -> None:
        """The Trainer's warnings after a resume, less the tied names :meth:`_save` leaves out (they are restored by
        the tie itself); the Trainer's own check would read ``_keys_to_ignore_on_save``, which only a
        ``PreTrainedModel`` has."""
        tied = tied_duplicates(self.accelerator.unwrap_model(self.model).state_dict())
        missing = [name for name in load_result.missing_keys if name not in tied]
        if missing:
            logger.warning(f"There were missing keys in the checkpoint model loaded: {missing}.")
        if load_result.unexpected_keys:
            logger.warning(f"There were unexpected keys in the checkpoint model loaded: {load_result.unexpected_keys}.")

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if not self._staging:  # the Trainer calls this on the staged folder, which is about to be renamed
            super()._push_from_checkpoint(checkpoint_folder)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluate the student alone: cross-entropy and logits (no teacher forward)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            logits = self.accelerator.unwrap_model(model).student_forward(inputs).logits
            loss = F.cross_entropy(logits, inputs["labels"])
        if prediction_loss_only:
            return loss, None, None
        return loss, logits, inputs["labels"]

    def export_student(self, output_dir: str | Path, tokenizer=None) -> Path:
        """Write the student alone as a plain HF folder (no projections, probes or other training-only parts)."""
        output_dir = Path(output_dir)
        if self.args.should_save:
            student = self.accelerator.unwrap_model(self.model).student
            save_with_code(student, output_dir)  # save_pretrained, plus the modelling code of a compressed embedding
            if tokenizer is not None:
                tokenizer.save_pretrained(output_dir)
        return output_dir
