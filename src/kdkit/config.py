"""Typed recipes: YAML in, validated plain objects out.

A recipe is validated once, here, at the edge. Every problem becomes one :class:`ConfigError` line that names
the key, the bad value and what would be valid; nothing downstream re-checks types. Recipes are data only:
YAML is read with ``yaml.safe_load`` so no tag can execute code.

The sections every task shares are defined here (``teacher``, ``student``, ``training``, ``evaluation``,
``generations``); a task's recipe (``task:``, default ``classification``) subclasses :class:`Recipe` with its own
``data`` section, and the ``losses`` it accepts come from the loss registry (:mod:`kdkit.terms`): the union is built
from whatever is registered for the task when the recipe is parsed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from kdkit import students, terms
from kdkit.errors import ConfigError
from kdkit.schema import Strict

_Strict = Strict


class TrainConfig(_Strict):
    """Optimisation settings; mapped onto ``transformers.TrainingArguments``.

    ``extra`` passes any other ``TrainingArguments`` field through unchanged (e.g. ``bf16``, ``report_to``,
    ``gradient_checkpointing``, ``deepspeed``); unknown names are refused.

    ``nonfinite`` says what a NaN or infinite loss term does: ``stop`` the run (the checkpoints written before it
    are kept), or ``skip`` the batch (it adds no gradient; the count is logged as ``skipped_batches``). Under
    ``skip`` the run still stops at ``max_consecutive_nonfinite`` bad batches in a row: by then the model itself,
    not one batch, has diverged.
    """

    epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_scheduler_type: str = "linear"
    seed: int = 42
    logging_steps: int = Field(50, gt=0)
    save_steps: int = Field(500, gt=0)
    save_total_limit: int = Field(2, gt=0)
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    nonfinite: Literal["stop", "skip"] = "stop"
    max_consecutive_nonfinite: int = Field(10, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _known_extra(cls, extra: dict[str, Any]) -> dict[str, Any]:
        if not extra:
            return extra
        from transformers import TrainingArguments  # imported only here: it takes seconds

        known = {f.name for f in dataclasses.fields(TrainingArguments)}
        for name in extra:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                raise ValueError(f"'{name}' is not a TrainingArguments field"
                                 + (f"; did you mean '{close[0]}'?" if close else ""))
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
    and refuses a stale one. ``cache_top_k`` is used when the label/vocabulary axis exceeds ``cache_dense_max``.
    """

    model: str
    finetune: TrainConfig | None = None
    cache: str = "auto"
    cache_top_k: int = Field(32, gt=0)
    cache_dense_max: int = Field(1024, gt=0)


class StudentConfig(_Strict):
    """How the student is built: ``init`` names a builder of :mod:`kdkit.students` (``teacher_layers``, ``config``,
    ``pretrained``, ``bilstm``, ...), which says which of ``layers``, ``model`` and ``overrides`` it reads.

    - ``teacher_layers``: a copy of the teacher keeping the blocks in ``layers`` (0-based), DistilBERT-style.
    - ``config``: random init from the config of ``model`` (default: the teacher's) with ``overrides``.
    - ``pretrained``: load ``model`` as it is (its own tokenizer may differ from the teacher's).
    - ``bilstm``: a BiLSTM classifier over the teacher's tokenizer (cross-architecture, e.g. for Universal-KD);
      ``overrides`` hold its shape and ``embedding: teacher|random`` (see kdkit.students.bilstm).
    """

    init: str = "teacher_layers"
    layers: list[int] | None = None
    model: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)

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
    """What the final report measures."""

    split: Literal["validation", "test"] = "test"
    latency_batch_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 32])
    latency_repeats: int = Field(20, gt=0)
    dm_alpha: float = Field(0.5, ge=0, le=1)


class GenerationsConfig(_Strict):
    """Born-again self-distillation over generations (Zhang & Sabuncu 2020; Furlanello et al. 2018).

    Generation 0 is the recipe itself (its ``losses``, and its teacher if it has one; the paper's plain CE is
    ``losses: [{name: ce}]``). Generation g = 1 … ``count`` − 1 trains a fresh student, built as ``student`` says,
    on (1 − ``alpha``)·CE(y) + ``alpha``·soft-CE(σ(z_{g−1}/``temperature``)) with generation g − 1's exported
    student as the teacher; the temperature divides the teacher's logits only (student at T = 1) and there is no
    T² factor, as in the paper's formula. Each generation is an ordinary run in ``<output_dir>/gen-<g>``.
    """

    count: int = Field(3, ge=2, le=100)
    alpha: float = Field(0.4, ge=0, le=1)
    temperature: float = Field(4.0, gt=0)


class Recipe(_Strict):
    """A complete distillation run; each task subclasses it with its ``data`` section (``task`` names it).

    ``teacher`` may be left out (or null) when no loss reads it and the student does not need it (``student.init``
    ``pretrained``, or ``config`` with ``student.model``): only the student is trained and reported.
    ``generations`` turns the run into born-again self-distillation (see :class:`GenerationsConfig`).
    """

    name: str = "distill"
    task: str = "classification"
    data: Any = None
    teacher: TeacherConfig | None = None
    student: StudentConfig
    losses: list[terms.LossConfig] = Field(min_length=1)
    training: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    output_dir: str | None = None
    generations: GenerationsConfig | None = None

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
            for i, term in enumerate(self.losses):
                if terms.term_class(term.name).reads_attention:
                    raise ConfigError(f"recipe key 'losses[{i}]': '{term.name}' compares attention, but a "
                                      f"'{self.student.init}' student (student.init) has none; use logit, "
                                      f"hidden-state, relation or universal_kd losses")
        return self

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
    members = tuple(terms.config_classes(task))
    entry = members[0] if len(members) == 1 else Annotated[Union[members], Field(discriminator="name")]
    return create_model(base.__name__, __base__=base, losses=(list[entry], Field(min_length=1)))


def _task_of(data: dict):
    from kdkit import tasks  # tasks build on this module; importing them registers the shipped ones

    name = data.get("task", "classification")
    if not isinstance(name, str) or name not in tasks.TASKS:
        raise ConfigError(f"recipe key 'task': {name!r} is not a task; valid: {', '.join(tasks.TASKS)}")
    return tasks.TASKS[name]


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in terms.CONFIGS and parts and parts[-1].startswith("["):
            continue  # pydantic adds the discriminator value as a path step; it is not a key the user wrote
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<recipe>"


def _one_line(err: ValidationError, task: str, model: type[Recipe]) -> str:
    first = err.errors()[0]
    key = _key_path(first["loc"])
    kind = first["type"]
    names = ", ".join(terms.loss_names(task))
    if kind == "extra_forbidden":
        return f"recipe key '{key}' is unknown{_valid_keys_hint(first['loc'], model)}"
    if kind == "union_tag_invalid" or (kind == "literal_error" and len(first["loc"]) == 3
                                       and first["loc"][0] == "losses" and first["loc"][2] == "name"):
        name = first["input"].get("name") if isinstance(first["input"], dict) else first["input"]
        key = key.removesuffix(".name")
        return f"recipe key '{key}.name': unknown loss {name!r}; valid: {names}"
    if kind == "union_tag_not_found":
        return f"recipe key '{key}': a loss needs 'name', one of: {names}"
    if kind == "missing":
        return f"recipe key '{key}' is required"
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"recipe key '{key}': {message}{shown}"


def _valid_keys_hint(loc: tuple, recipe: type[Recipe]) -> str:
    section = {"teacher": TeacherConfig, "student": StudentConfig, "training": TrainConfig,
               "evaluation": EvaluationConfig, "generations": GenerationsConfig,
               "data": recipe.model_fields["data"].annotation}
    if len(loc) == 1:
        model = recipe
    elif loc[0] == "losses" and len(loc) >= 3:
        model = terms.config_class(str(loc[2]))
    elif loc[0] == "teacher" and len(loc) >= 3 and loc[1] == "finetune":
        model = TrainConfig
    else:
        model = section.get(loc[0]) if len(loc) == 2 else None
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
        raise ConfigError(_one_line(err, task.name, model)) from None


def read_recipe_file(path: str | Path) -> dict:
    """Read a YAML recipe as plain data (``yaml.safe_load``: tags never execute code)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"recipe file '{path}' is a directory; give a YAML file or a shipped recipe name")
    if not path.is_file():
        raise ConfigError(f"recipe file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        detail = str(err).splitlines()[0]
        raise ConfigError(f"recipe file '{path}' is not valid YAML: {detail}") from None
    if data is None:
        raise ConfigError(f"recipe file '{path}' is empty")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (``losses.0.weight=0.5``); values are parsed as YAML scalars/lists."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set '{item}': expected key=value, e.g. training.epochs=2")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set '{item}': value {raw!r} is not valid YAML") from None
        node: Any = data
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set '{item}': '{part}' is not an index of the {len(node)}-item list "
                                      f"'{'.'.join(parts[:i])}'")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set '{item}': '{'.'.join(parts[:i])}' is not a mapping")
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
