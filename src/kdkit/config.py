"""Typed recipes: YAML in, validated plain objects out.

A recipe is validated once, here, at the edge. Every problem becomes one :class:`ConfigError` line that names
the key, the bad value (cut to a line, see :func:`kdkit.schema.shorten`) and what would be valid; nothing
downstream re-checks types. Every field has bounds (finite, ranges, booleans kept apart from numbers; see
:mod:`kdkit.schema`).

Recipes are data only. Files and ``--set`` values are read by one hardened YAML loader (safe: no tag executes
code) that also refuses what YAML allows but a recipe never needs: a file over 1 MiB (checked before parsing), a
key given twice in one mapping (both lines named), nesting deeper than 32 levels, and aliases that expand to more
than 10,000 values (an alias bomb fails after a few thousand, never expanding further). ``1e-5`` is read as a
number (PyYAML's YAML 1.1 rules would read it as a string), so ``1e400`` is inf, which every float field refuses.

The sections every task shares are defined here (``teacher``, ``student``, ``training``, ``evaluation``,
``generations``); a task's recipe (``task:``, default ``classification``) subclasses :class:`Recipe` with its own
``data`` section, and the ``losses`` it accepts come from the loss registry (:mod:`kdkit.terms`): the union is built
from whatever is registered for the task when the recipe is parsed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from kdkit import students, terms
from kdkit.errors import ConfigError
from kdkit.schema import (COUNT_MAX, MAX_DEPTH, BatchSize, Count, Epochs, Fraction, LayerIndex,
                          LearningRate, Seed, Strict, Temperature, did_you_mean, shorten)

_Strict = Strict
MAX_RECIPE_BYTES = 1 << 20  # a recipe file, or one --set item; shipped recipes are under 4 KiB
ALIAS_VALUES_MAX = 10_000  # values YAML aliases may add: a 50-value base recipe shared by 200 runs


class TrainConfig(_Strict):
    """Optimisation settings; mapped onto ``transformers.TrainingArguments``.

    ``extra`` passes any other ``TrainingArguments`` field through unchanged (e.g. ``bf16``, ``report_to``,
    ``gradient_checkpointing``, ``deepspeed``); unknown names are refused.

    ``nonfinite`` says what a NaN or infinite loss term does: ``stop`` the run (the checkpoints written before it
    are kept), or ``skip`` the batch (it adds no gradient; the count is logged as ``skipped_batches``). Under
    ``skip`` the run still stops at ``max_consecutive_nonfinite`` bad batches in a row: by then the model itself,
    not one batch, has diverged.

    Bounds: epochs (0, 1e4]; max_steps -1 (train for ``epochs``) or 1..2³¹ − 1; learning_rate (1e-12, 10];
    batch sizes and gradient_accumulation_steps 1..2¹⁶; weight_decay [0, 10]; warmup_ratio [0, 1); seed
    0..2³² − 1; step counts and limits 1..2³¹ − 1; no value in ``extra`` is NaN or infinite.
    """

    epochs: Epochs = 3.0
    max_steps: int = Field(-1, ge=-1, le=COUNT_MAX)
    learning_rate: LearningRate = 5e-5
    batch_size: BatchSize = 32
    eval_batch_size: BatchSize = 64
    gradient_accumulation_steps: BatchSize = 1
    weight_decay: float = Field(0.01, ge=0, le=10)
    warmup_ratio: Fraction = 0.0
    lr_scheduler_type: str = "linear"
    seed: Seed = 42
    logging_steps: Count = 50
    save_steps: Count = 500
    save_total_limit: Count = 2
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    nonfinite: Literal["stop", "skip"] = "stop"
    max_consecutive_nonfinite: Count = 10
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("max_steps")
    @classmethod
    def _steps_or_epochs(cls, steps: int) -> int:
        # the Trainer reads 0 as "no step limit" and would silently train for `epochs`
        if steps == 0:
            raise ValueError("0 steps would train nothing; give a positive number of steps, or -1 to train for "
                             "'epochs'")
        return steps

    @field_validator("lr_scheduler_type")
    @classmethod
    def _known_scheduler(cls, name: str) -> str:
        from transformers.trainer_utils import SchedulerType  # imported only here: it takes seconds

        known = [kind.value for kind in SchedulerType]
        if name not in known:
            raise ValueError(f"'{shorten(name)}' is not a scheduler{did_you_mean(name, known)}; valid: "
                             f"{', '.join(known)}")
        return name

    @field_validator("report_to")
    @classmethod
    def _known_reporters(cls, names: list[str]) -> list[str]:
        if all(name in ("none", "all", "tensorboard") for name in names):
            return names
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        known = ["none", "all", *INTEGRATION_TO_CALLBACK]
        for name in names:
            if name not in known:
                raise ValueError(f"'{shorten(name)}' is not a reporting integration{did_you_mean(name, known)}; "
                                 f"valid: {', '.join(known)}")
        return names

    @field_validator("extra")
    @classmethod
    def _known_extra(cls, extra: dict[str, Any]) -> dict[str, Any]:
        if not extra:
            return extra
        from transformers import TrainingArguments  # imported only here: it takes seconds

        known = {f.name for f in dataclasses.fields(TrainingArguments)}
        for name in extra:
            if name not in known:
                raise ValueError(f"'{shorten(name)}' is not a TrainingArguments field{did_you_mean(name, known)}")
        return extra


class TeacherConfig(_Strict):
    """The teacher: a named offline model, a local folder or a hub id.

    With ``finetune`` the teacher is first fine-tuned on the recipe's whole training split (plain CE; a
    ``data.max_train_samples`` limit applies to the student only) and the result is cached under the kdkit cache
    directory, keyed by the model, the data and the fine-tuning settings.

    ``cache`` says where the teacher's signals come from during distillation: ``auto`` (default) runs the teacher
    once over the training split and reads its outputs from a cache keyed by the teacher's weights, the tokenizer,
    the training examples and what the losses need; terms that need attention maps or hooked Q/K/V fall back to
    the live teacher. ``off`` runs the teacher at every step. A directory path uses (or builds) the cache there
    and refuses a stale one. ``cache_top_k`` is used when the label/vocabulary axis exceeds ``cache_dense_max``
    (both 1..2³¹ − 1).
    """

    model: str
    finetune: TrainConfig | None = None
    cache: str = "auto"
    cache_top_k: Count = 32
    cache_dense_max: Count = 1024


class EmbeddingConfig(_Strict):
    """Block-wise compression of the student's word embedding after it is built (GroupReduce, NeurIPS 2018;
    DiscBlock, Findings EMNLP 2021; :mod:`kdkit.students.embedding`), then distilled as the recipe says.

    ``method``: ``svd`` (one block, plain truncated SVD: the baseline), ``frequency`` (GroupReduce's importance),
    ``tfidf`` (DiscBlock's, over the training texts) or ``differentiable`` (DiscBlock's: per-word gates trained with
    the task's supervised loss for ``gate_steps`` 1..10⁵ batches, mean gate pulled to ``gate_target`` (0, 1) with
    weight ``gate_weight`` [0, 10⁴], Adam at ``gate_lr``). The factors get ``fraction`` (0, 1) of the embedding
    matrix's parameters, or ``parameters`` (give one). ``blocks`` 1..64 (k-means on the log-importance),
    ``refine`` 0..20 rounds of GroupReduce's refinement; ``tfidf_alpha``/``tfidf_beta`` in [0, 10] are
    DiscBlock's tf̄ = α + β/N·Σ_d tf/max_tf.
    """

    method: Literal["svd", "frequency", "tfidf", "differentiable"] = "tfidf"
    fraction: float | None = Field(None, gt=0, lt=1)
    parameters: Count | None = None
    blocks: int = Field(4, ge=1, le=64)
    refine: int = Field(0, ge=0, le=20)
    tfidf_alpha: float = Field(0.5, ge=0, le=10)
    tfidf_beta: float = Field(0.5, ge=0, le=10)
    gate_steps: int = Field(200, ge=1, le=100_000)
    gate_target: float = Field(0.5, gt=0, lt=1)
    gate_weight: float = Field(10.0, ge=0, le=1e4)
    gate_lr: LearningRate = 0.1

    @model_validator(mode="after")
    def _one_budget(self) -> "EmbeddingConfig":
        if (self.fraction is None) == (self.parameters is None):
            raise ValueError("give the factors' size as one of 'fraction' (of the embedding's parameters) or "
                             "'parameters'")
        return self


Multiplier = Annotated[float, Field(gt=0, le=1)]


class AdaptiveConfig(_Strict):
    """A width- and depth-adaptive student (DynaBERT, Hou et al. NeurIPS 2020; :mod:`kdkit.students.adaptive`):
    every optimiser step trains each sub-network of ``widths`` × ``depths`` (multipliers in (0, 1], each list
    holding 1.0, at most 8 values) on the recipe's losses, summed; the run's student is the full network and every
    sub-network is exported and evaluated beside it. ``rewire``: before training, order every layer's heads and FFN
    neurons by their importance (the gradient of the student's cross-entropy over ``importance_examples``
    training examples), so narrower sub-networks keep the most important; later stages of a staged recipe never
    rewire (their student already is)."""

    widths: list[Multiplier] = Field(default_factory=lambda: [1.0, 0.75, 0.5, 0.25], min_length=1, max_length=8)
    depths: list[Multiplier] = Field(default_factory=lambda: [1.0], min_length=1, max_length=8)
    rewire: bool = True
    importance_examples: Count = 2048

    @field_validator("widths", "depths")
    @classmethod
    def _full_and_distinct(cls, values: list[float]) -> list[float]:
        if 1.0 not in values:
            raise ValueError("must hold 1.0 (the full network is the run's student)")
        if len(set(values)) != len(values):
            raise ValueError(f"repeats a multiplier: {values}")
        return sorted(values, reverse=True)

    def sub_networks(self) -> list[tuple[float, float]]:
        """(width, depth) of every sub-network trained, the full one first."""
        return [(w, d) for d in self.depths for w in self.widths]


class StudentConfig(_Strict):
    """How the student is built: ``init`` names a builder of :mod:`kdkit.students` (``teacher_layers``, ``config``,
    ``pretrained``, ``bilstm``, ...), which says which of ``layers``, ``model`` and ``overrides`` it reads.

    - ``teacher_layers``: a copy of the teacher keeping the blocks in ``layers`` (0-based), DistilBERT-style.
    - ``config``: random init from the config of ``model`` (default: the teacher's) with ``overrides``.
    - ``pretrained``: load ``model`` as it is (its own tokenizer may differ from the teacher's).
    - ``bilstm``: a BiLSTM classifier over the teacher's tokenizer (cross-architecture, e.g. for Universal-KD);
      ``overrides`` hold its shape and ``embedding: teacher|random`` (see kdkit.students.bilstm).

    ``layers``: at most 256 indices, each 0..4095; ``overrides`` are checked against the model's own rules when it
    is built (positive sizes, heads dividing the width, ...). ``embedding`` compresses the built student's word
    embedding into low-rank blocks (:class:`EmbeddingConfig`); ``adaptive`` trains it as a DynaBERT model of
    width/depth sub-networks (:class:`AdaptiveConfig`).
    """

    init: str = "teacher_layers"
    layers: list[LayerIndex] | None = Field(None, max_length=256)
    model: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    embedding: EmbeddingConfig | None = None
    adaptive: AdaptiveConfig | None = None

    @field_validator("init")
    @classmethod
    def _known_builder(cls, init: str) -> str:
        if init not in students.BUILDERS:
            raise ValueError(f"unknown student builder; valid: {', '.join(students.BUILDERS)}")
        return init

    @model_validator(mode="after")
    def _init_needs(self) -> "StudentConfig":
        students.builder(self.init).check(self)
        return self


class EvaluationConfig(_Strict):
    """What the final report measures: latency at each of ``latency_batch_sizes`` (1..2¹⁶, at most 64 of them),
    ``latency_repeats`` times (1..10⁶); ``dm_alpha`` in [0, 1].

    Variants of the student, each a row of its own beside the trained student (classification, generation):
    ``before``: the student as built (after any embedding compression), evaluated before training;
    ``int8``: the trained student with its linear layers dynamically quantised to int8 and its word embedding (or
    its block factors) stored as int8 rows (:func:`kdkit.models.int8.quantize_int8`), with its size in MB beside
    the float student's."""

    split: Literal["validation", "test"] = "test"
    latency_batch_sizes: list[BatchSize] = Field(default_factory=lambda: [1, 32], max_length=64)
    latency_repeats: int = Field(20, gt=0, le=10**6)
    dm_alpha: float = Field(0.5, ge=0, le=1)
    before: bool = False
    int8: bool = False


class GenerationsConfig(_Strict):
    """Born-again self-distillation over generations (Zhang & Sabuncu 2020; Furlanello et al. 2018).

    Generation 0 is the recipe itself (its ``losses``, and its teacher if it has one; the paper's plain CE is
    ``losses: [{name: ce}]``). Generation g = 1 … ``count`` − 1 trains a fresh student, built as ``student`` says,
    on (1 − ``alpha``)·CE(y) + ``alpha``·soft-CE(σ(z_{g−1}/``temperature``)) with generation g − 1's exported
    student as the teacher; the temperature divides the teacher's logits only (student at T = 1) and there is no
    T² factor, as in the paper's formula. Each generation is an ordinary run in ``<output_dir>/gen-<g>``.
    Bounds: count 2..100, alpha [0, 1], temperature [1e-3, 1e3].
    """

    count: int = Field(3, ge=2, le=100)
    alpha: float = Field(0.4, ge=0, le=1)
    temperature: Temperature = 4.0


class StageConfig(_Strict):
    """One stage of a multi-stage recipe (``stages``): the stages train in order, each starting from the student the
    stage before exported (TinyBERT's intermediate-layer then prediction-layer distillation, Jiao et al. 2020; CKD's
    task-specific stage on an already distilled student, Park et al. 2021).

    ``name`` labels the stage in the report (default: its index); ``losses`` replace the recipe's ``losses`` for
    this stage (left out: the recipe's); ``training`` holds ``training`` keys that change for this stage (epochs,
    learning_rate, ...), the rest are the recipe's; ``adaptive`` replaces ``student.adaptive`` for this stage
    (DynaBERT's width stage, then its depth stage; a stage after the first never rewires). At most 16 stages."""

    name: str | None = Field(None, min_length=1, max_length=64)
    losses: list[terms.LossConfig] | None = Field(None, min_length=1)
    training: dict[str, Any] = Field(default_factory=dict)
    adaptive: AdaptiveConfig | None = None


class Recipe(_Strict):
    """A complete distillation run; each task subclasses it with its ``data`` section (``task`` names it).

    ``teacher`` may be left out (or null) when no loss reads it and the student does not need it (``student.init``
    ``pretrained``, or ``config`` with ``student.model``): only the student is trained and reported.
    ``generations`` turns the run into born-again self-distillation (see :class:`GenerationsConfig`); ``stages``
    into several trainings in a row, each from the student of the one before (see :class:`StageConfig`; a recipe
    whose stages all list their losses may leave the top-level ``losses`` out).
    """

    supports_stages: ClassVar[bool] = False  # the tasks whose exported student loads as a pretrained one set it
    supports_adaptive: ClassVar[bool] = False  # the tasks that train and export DynaBERT sub-networks set it

    name: str = Field("distill", min_length=1, max_length=128)  # names the run's folder
    task: str = "classification"
    data: Any = None
    teacher: TeacherConfig | None = None
    student: StudentConfig
    losses: list[terms.LossConfig] = Field(min_length=1)
    training: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    output_dir: str | None = None
    generations: GenerationsConfig | None = None
    stages: list[StageConfig] | None = Field(None, min_length=1, max_length=16)

    @model_validator(mode="before")
    @classmethod
    def _losses_from_stages(cls, data: Any) -> Any:
        # a recipe whose every stage lists its losses needs no top-level ones: the first stage's stand there
        if isinstance(data, dict) and "losses" not in data and isinstance(data.get("stages"), list) \
                and data["stages"] and all(isinstance(st, dict) and "losses" in st for st in data["stages"]):
            return {**data, "losses": data["stages"][0]["losses"]}
        return data

    @model_validator(mode="after")
    def _adaptive_valid(self) -> "Recipe":
        staged = [i for i, stage in enumerate(self.stages or []) if stage.adaptive is not None]
        if self.student_adaptive() is None and not staged:
            return self
        where = "student.adaptive" if self.student_adaptive() is not None else f"stages[{staged[0]}].adaptive"
        if not self.supports_adaptive:
            raise ConfigError(f"recipe key '{where}': the {self.task} task has no width/depth-adaptive students")
        if self.generations is not None:
            raise ConfigError(f"recipe keys '{where}' and 'generations' do not go together: give one of them")
        if self.student.embedding is not None:
            raise ConfigError(f"recipe keys '{where}' and 'student.embedding' do not go together: compress the "
                              f"embedding of an exported sub-network in a run of its own")
        for key, name in self._attention_losses():
            raise ConfigError(f"recipe key '{key}': '{name}' compares attention maps, which a narrower sub-network "
                              f"({where}) has fewer heads for; use logit, hidden-state or relation losses")
        return self

    def _attention_losses(self) -> list[tuple[str, str]]:
        """``(recipe key, loss name)`` of every loss, the stages' included, that compares attention maps."""
        entries = [("losses", self.losses)] + [(f"stages[{i}].losses", stage.losses)
                                               for i, stage in enumerate(self.stages or [])]
        return [(f"{key}[{i}]", term.name) for key, losses in entries for i, term in enumerate(losses or [])
                if terms.term_class(term.name).reads_attention]

    @model_validator(mode="after")
    def _stages_valid(self) -> "Recipe":
        if self.stages is None:
            return self
        if not self.supports_stages:
            raise ConfigError(f"recipe key 'stages': the {self.task} task does not train in stages (yet); "
                              f"give one set of losses")
        if self.generations is not None:
            raise ConfigError("recipe keys 'stages' and 'generations' do not go together: give one of them")
        if self.student.embedding is not None:
            raise ConfigError("recipe key 'student.embedding' does not go with 'stages' yet: compress the student "
                              "in a run of its own, then distil it in stages with student.init 'pretrained'")
        for i in range(len(self.stages)):
            self.stage_training(i)
        return self

    def stage_training(self, index: int) -> TrainConfig:
        """The training settings of stage ``index``: the recipe's, with the keys its ``training`` gives."""
        changes = self.stages[index].training
        try:
            return TrainConfig.model_validate({**self.training.model_dump(), **changes})
        except ValidationError as err:
            line = _one_line(err, self.task, TrainConfig).replace("recipe key '", f"recipe key 'stages[{index}]"
                                                                 f".training.", 1)
            raise ConfigError(line) from None

    @model_validator(mode="after")
    def _teacher_given_where_needed(self) -> "Recipe":
        # ConfigError, not ValueError: pydantic would file a ValueError under the whole recipe, not under a key
        free = ", ".join(terms.teacher_free_names(self.task))
        if self.teacher is None:
            for i, term in enumerate(self.losses):
                if not terms.teacher_free(term.name):
                    raise ConfigError(f"recipe key 'teacher' is missing but losses[{i}] '{term.name}' reads the "
                                      f"teacher; give teacher.model or use only teacher-free losses ({free})")
            if self.student_needs_teacher():
                raise ConfigError(f"recipe key 'teacher' is missing but student.init '{self.student.init}' builds "
                                  f"the student from the teacher; give teacher.model, or use student.init "
                                  f"'pretrained' (or 'config' with student.model)")
        if self.generations is not None and self.student_needs_teacher():
            raise ConfigError(f"recipe key 'generations': every generation has another teacher, so the student "
                              f"must be built without one, not with student.init '{self.student.init}'; use "
                              f"'pretrained' (or 'config' with student.model)")
        return self

    @model_validator(mode="after")
    def _student_has_what_losses_read(self) -> "Recipe":
        if not students.builder(self.student.init).has_attention:
            for key, name in self._attention_losses():
                raise ConfigError(f"recipe key '{key}': '{name}' compares attention, but a '{self.student.init}' "
                                  f"student (student.init) has none; use logit, hidden-state, relation or "
                                  f"universal_kd losses")
        return self

    def student_adaptive(self) -> AdaptiveConfig | None:
        """``student.adaptive``, or None (also for tasks whose student section has no such key)."""
        return getattr(self.student, "adaptive", None)

    def student_needs_teacher(self) -> bool:
        return students.builder(self.student.init).needs_teacher(self.student)

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")

    def needs_token_alignment(self) -> bool:
        return any(terms.term_class(term.name).token_aligned for term in self.losses)

    def needs_attentions(self) -> bool:
        return any(terms.term_class(term.name).eager_attention for term in self.losses)


@functools.lru_cache(maxsize=None)
def _recipe_model(base: type[Recipe], task: str, registered: tuple[str, ...]) -> type[Recipe]:
    """``base`` with ``losses`` typed as the union of the loss configs registered for ``task`` (rebuilt when the
    registry grows, so a loss registered after import is accepted)."""
    del registered  # part of the cache key only
    if "losses" not in base.model_fields:  # a task with its own loop and no loss terms (dataset distillation)
        return base
    members = tuple(terms.config_classes(task))
    entry = members[0] if len(members) == 1 else Annotated[Union[members], Field(discriminator="name")]
    stage = create_model(StageConfig.__name__, __base__=StageConfig,
                         losses=(list[entry] | None, Field(None, min_length=1)))
    return create_model(base.__name__, __base__=base, losses=(list[entry], Field(min_length=1)),
                        stages=(list[stage] | None, Field(None, min_length=1, max_length=16)))


def _task_of(data: dict):
    from kdkit import tasks  # tasks build on this module; importing them registers the shipped ones

    name = data.get("task", "classification")
    if not isinstance(name, str) or name not in tasks.TASKS:
        raise ConfigError(f"recipe key 'task': {shorten(name)!r} is not a task; valid: {', '.join(tasks.TASKS)}")
    return tasks.TASKS[name]


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in terms.CONFIGS and parts and parts[-1].startswith("["):
            continue  # pydantic adds the discriminator value as a path step; it is not a key the user wrote
        else:
            parts.append(("." if parts else "") + shorten(str(item)))
    return "".join(parts) or "<recipe>"


def _one_line(err: ValidationError, task: str, model: type[Recipe], first: dict | None = None) -> str:
    first = first or err.errors()[0]
    key = _key_path(first["loc"])
    kind = first["type"]
    names = ", ".join(terms.loss_names(task))
    if kind == "extra_forbidden":
        return f"recipe key '{key}' is unknown{_valid_keys_hint(first['loc'], model)}"
    loss_at = _loss_entry(first["loc"])
    if kind == "union_tag_invalid" or (kind == "literal_error" and loss_at is not None
                                       and first["loc"][loss_at + 2:] == ("name",)):
        name = first["input"].get("name") if isinstance(first["input"], dict) else first["input"]
        key = key.removesuffix(".name")
        return f"recipe key '{key}.name': unknown loss {shorten(name)!r}; valid: {names}"
    if kind == "union_tag_not_found":
        return f"recipe key '{key}': a loss needs 'name', one of: {names}"
    if kind == "missing":
        return f"recipe key '{key}' is required"
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    blank = isinstance(value, str) and not value.strip()
    shown = "" if isinstance(value, dict) else f" (got {value!r})" if blank else f" (got {shorten(value)})"
    return f"recipe key '{key}': {message}{shown}"


def _section_of(model: Any, name: Any) -> Any:
    """The section model a key of ``model`` holds (through ``| None`` and ``list[...]``), or None."""
    info = getattr(model, "model_fields", {}).get(name) if isinstance(name, str) else None
    pending = [info.annotation] if info is not None else []
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        pending += [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return None


def _loss_entry(loc: tuple) -> int | None:
    """Where ``losses`` stands in an error's path when the path goes into one loss entry (the recipe's or a
    stage's: ``("losses", i, name, ...)``), else None."""
    for at, part in enumerate(loc):
        if part == "losses" and len(loc) > at + 2 and isinstance(loc[at + 1], int):
            return at
    return None


def _valid_keys_hint(loc: tuple, recipe: type[Recipe]) -> str:
    loss_at = _loss_entry(loc)
    if loss_at is not None and str(loc[loss_at + 2]) in terms.CONFIGS:  # the keys of the loss its 'name' chose
        model = terms.config_class(str(loc[loss_at + 2]))
    else:
        model = recipe
        for part in loc[:-1]:
            if not isinstance(part, int):  # a list index stays on the list's item section
                model = _section_of(model, part)
    fields = getattr(model, "model_fields", None)
    return f"; valid keys: {', '.join(fields)}" if fields else ""


def parse_recipe(data: Any) -> Recipe:
    """Validate a recipe given as a mapping; raise :class:`ConfigError` with one line on any problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"a recipe must be a mapping of keys to values, got {type(data).__name__}")
    task = _task_of(data)
    model = _recipe_model(task.recipe, task.name, tuple(terms.loss_names(task.name)))
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        if "losses" not in data and data.get("stages"):
            # top-level losses copied from the first stage (Recipe._losses_from_stages): report the stage's own key
            errors = [e for e in errors if e["loc"][:1] != ("losses",)]
            if not errors:
                raise ConfigError("recipe key 'losses' is required when a stage lists no losses of its own (a "
                                  "recipe whose every stage lists its losses may leave it out)") from None
        raise ConfigError(_one_line(err, task.name, model, errors[0])) from None


class _Refused(yaml.YAMLError):
    """YAML that is valid but that a recipe may not use; the message says what and where."""


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tag executes code) that refuses keys given twice in one mapping and nesting deeper
    than ``MAX_DEPTH``, expands aliases into copies under a small limit, and reads ``1e-5`` as a number.

    An alias (``*base``, as ``yaml.safe_dump`` writes for a value used twice) becomes a copy of its anchored value,
    so changing one place (``--set``) never changes another; all aliases together may add at most
    ``ALIAS_VALUES_MAX`` values, so an alias bomb fails at the alias that crosses the limit, after a few thousand
    values, instead of expanding to billions.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        self._open: set[str] = set()  # anchors whose value is being read: an alias to one would be a cycle
        self._keys: list[str] = []  # the keys (and list indices) above the node being read

    def _where(self) -> str:
        keys = ".".join(self._keys)
        return f"key '{shorten(keys)}'" if keys else "the document"

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"is nested more than {MAX_DEPTH} levels deep at {self._where()} (line {line})")
        if isinstance(event, yaml.AliasEvent):
            return self._expand(event.anchor, line)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        self._depth += 1
        # a mapping's value is composed with its key node as ``index``, a sequence's item with its position
        step = index.value if isinstance(index, yaml.ScalarNode) else str(index) if isinstance(index, int) else None
        if step is not None:
            self._keys.append(step)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor)
            if step is not None:
                self._keys.pop()

    def _expand(self, anchor: str, line: int) -> yaml.Node:
        """A copy of the node ``anchor`` names, counted against ``ALIAS_VALUES_MAX``."""
        if anchor in self._open:
            raise _Refused(f"uses the YAML alias *{shorten(anchor)} inside its own anchor (line {line}); a recipe "
                           f"cannot contain itself")
        node = super().compose_node(None, None)  # the anchored node (PyYAML names an undefined alias)
        values, height = _extent(node)
        self._expanded += values
        if self._expanded > ALIAS_VALUES_MAX:
            raise _Refused(f"expands its YAML aliases to more than {ALIAS_VALUES_MAX} values (alias "
                           f"*{shorten(anchor)}, line {line}); write the values out")
        if self._depth + height > MAX_DEPTH:
            raise _Refused(f"is nested more than {MAX_DEPTH} levels deep at {self._where()} (line {line}, alias "
                           f"*{shorten(anchor)})")
        return _copy_node(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # ``<<: *base`` merges a mapping, where explicit keys win
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = lines.get(key)
                except TypeError:
                    continue  # an unhashable key: the constructor refuses it
                if first is not None:
                    raise _Refused(f"gives key '{shorten(str(key))}' twice (lines {first} and {line}); keep one")
                lines[key] = line
        return super().construct_mapping(node, deep)


def _extent(node: yaml.Node) -> tuple[int, int]:
    """How many values (nodes) ``node`` holds and how deep it nests."""
    children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
        node.value if isinstance(node, yaml.SequenceNode) else []
    extents = [_extent(child) for child in children]
    return 1 + sum(v for v, _ in extents), 1 + max((h for _, h in extents), default=0)


def _copy_node(node: yaml.Node) -> yaml.Node:
    if isinstance(node, yaml.MappingNode):
        value = [(_copy_node(k), _copy_node(v)) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        value = [_copy_node(item) for item in node.value]
    else:
        return yaml.ScalarNode(node.tag, node.value, node.start_mark, node.end_mark, node.style)
    return type(node)(node.tag, value, node.start_mark, node.end_mark, node.flow_style)


# YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent; YAML 1.2 and people also write 1e-5
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))


def load_yaml(text: str, where: str) -> Any:
    """Parse ``text`` with :class:`RecipeLoader`; any problem is one :class:`ConfigError` line that starts with
    ``where`` (``recipe file 'x.yaml'``)."""
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{where} is {len(text)} characters; at most {MAX_RECIPE_BYTES} (1 MiB) are read")
    loader = RecipeLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as err:
        raise ConfigError(f"{where} {err}") from None
    except (yaml.YAMLError, ValueError) as err:  # ValueError: int() of a number with over 4300 digits
        raise ConfigError(f"{where} is not valid YAML: {shorten(str(err).splitlines()[0], 200)}") from None
    finally:
        loader.dispose()


def read_recipe_file(path: str | Path) -> dict:
    """Read a YAML recipe (or comparison) file as plain data with the hardened :class:`RecipeLoader`; a file over
    ``MAX_RECIPE_BYTES`` is refused before it is parsed."""
    path = Path(path)
    where = f"recipe file '{path}'"
    if path.is_dir():
        raise ConfigError(f"{where} is a directory; give a YAML file or a shipped recipe name")
    if not path.is_file():
        raise ConfigError(f"{where} does not exist")
    with path.open("rb") as file:
        raw = file.read(MAX_RECIPE_BYTES + 1)
    if len(raw) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_RECIPE_BYTES} bytes (1 MiB); a recipe is a short file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not valid YAML: not UTF-8 at byte {err.start}") from None
    data = load_yaml(text, where)
    if data is None:
        raise ConfigError(f"{where} is empty")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (``losses.0.weight=0.5``); values are parsed as YAML scalars/lists by the
    same hardened loader as recipe files."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        shown = shorten(item)
        if not sep or not key:
            raise ConfigError(f"--set '{shown}': expected key=value, e.g. training.epochs=2")
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise ConfigError(f"--set '{shown}': the key is nested more than {MAX_DEPTH} levels deep")
        value = load_yaml(raw, f"--set '{shown}': the value")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = shorten(".".join(parts[:i]))
            if isinstance(node, list):
                if not (part.isdigit() and len(part) < 10) or int(part) >= len(node):
                    raise ConfigError(f"--set '{shown}': '{shorten(part)}' is not an index of the {len(node)}-item "
                                      f"list '{where}'")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set '{shown}': '{where}' is not a mapping")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return data


def load_recipe(source: str | Path | dict, overrides: list[str] | None = None) -> Recipe:
    """A recipe from a YAML path, a shipped recipe name (``quickstart``) or a mapping, with ``--set`` overrides."""
    if isinstance(source, dict):
        data = source
    else:
        data = read_recipe_file(resolve_recipe_path(source))
    return parse_recipe(apply_overrides(data, overrides or []))


SHIPPED = Path(__file__).parent / "recipes"


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def resolve_recipe_path(source: str | Path) -> Path:
    path = Path(source)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    shipped = SHIPPED / f"{source}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"recipe '{source}' is neither a file nor a shipped recipe; shipped: "
                      f"{', '.join(shipped_recipes())}")


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def with_current_defaults(stored: Any) -> Any:
    """A stored ``recipe.yaml`` (as plain data) re-validated by today's schema and dumped again, so a key added to
    kdkit since the run was made counts at its default instead of as a difference; data that no longer validates
    (a key removed or renamed since) comes back unchanged and so differs where it changed."""
    try:
        return yaml.safe_load(recipe_to_yaml(parse_recipe(stored)))
    except ConfigError:
        return stored


def recipe_differences(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """Where two recipes given as plain data (``recipe.yaml`` loaded) differ: ``(dotted key, old, new)`` for every
    differing leaf, in sorted key order; a list whose length changed differs as a whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [found for k in sorted(old.keys() | new.keys(), key=str) if old.get(k) != new.get(k)
                for found in recipe_differences(old.get(k), new.get(k), f"{key}.{k}" if key else str(k))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [found for i, (a, b) in enumerate(zip(old, new)) if a != b
                for found in recipe_differences(a, b, f"{key}.{i}")]
    return [] if old == new else [(key or "<recipe>", old, new)]


def describe_difference(difference: tuple[str, Any, Any]) -> str:
    """One difference of :func:`recipe_differences` as ``key: old → new``, values cut short (strings quoted, so
    ``'5'`` and ``5`` read differently)."""
    key, old, new = difference
    old, new = (shorten(repr(v) if isinstance(v, str) else v) for v in (old, new))
    return f"{shorten(key)}: {old} → {new}"
