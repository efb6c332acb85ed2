"""Typed recipes: YAML in, validated plain objects out.

A recipe is validated once, here, at the edge. Every problem becomes one :class:`ConfigError` line that names
the key, the bad value and what would be valid; nothing downstream re-checks types. Recipes are data only:
YAML is read with ``yaml.safe_load`` so no tag can execute code.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdkit.errors import ConfigError

LayerMapKind = Literal["pairs", "uniform", "skip", "last_k", "emb_skip", "last"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DataConfig(_Strict):
    """Where the examples come from: a named offline dataset, local csv/jsonl files, or a hub dataset name."""

    dataset: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = Field(128, gt=0, le=8192)
    max_train_samples: int | None = Field(None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("give exactly one of data.dataset (a named or hub dataset) or data.train_file")
        return self


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
    """How the student is built.

    - ``teacher_layers``: a copy of the teacher keeping the blocks in ``layers`` (0-based), DistilBERT-style.
    - ``config``: random init from the config of ``model`` (default: the teacher's) with ``overrides``.
    - ``pretrained``: load ``model`` as it is (its own tokenizer may differ from the teacher's).
    - ``bilstm``: a BiLSTM classifier over the teacher's tokenizer (cross-architecture, e.g. for Universal-KD);
      ``overrides`` hold its shape and ``embedding: teacher|random`` (see kdkit.students.student_bilstm).
    """

    init: Literal["teacher_layers", "config", "pretrained", "bilstm"] = "teacher_layers"
    layers: list[int] | None = None
    model: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _init_needs(self) -> "StudentConfig":
        if self.init == "teacher_layers" and not self.layers:
            raise ValueError("student.init 'teacher_layers' needs student.layers, e.g. [0, 2, 4]")
        if self.init == "pretrained" and not self.model:
            raise ValueError("student.init 'pretrained' needs student.model")
        if self.init == "config" and not self.overrides:
            raise ValueError("student.init 'config' needs student.overrides, e.g. {num_hidden_layers: 4}")
        if self.init == "bilstm" and (self.layers or self.model):
            raise ValueError("student.init 'bilstm' reads only student.overrides (e.g. {hidden_size: 256, "
                             "num_hidden_layers: 2, embedding: teacher}), not student.layers or student.model")
        return self


class _Term(_Strict):
    weight: float = Field(1.0, ge=0)


class CELoss(_Term):
    """Hard-label cross-entropy of the student."""

    name: Literal["ce"]


class KDLoss(_Term):
    """Hinton KD on logits: ``kd`` is T²·KL(σ(z_t/T) ‖ σ(z_s/T)); ``soft_ce`` the soft cross-entropy (same grad)."""

    name: Literal["kd", "soft_ce"]
    temperature: float = Field(2.0, gt=0)
    t2_scaling: bool = True
    temperature_on: Literal["both", "teacher"] = "both"


class LogitMSELoss(_Term):
    """MSE between student and teacher logits (divided by T)."""

    name: Literal["logit_mse"]
    temperature: float = Field(1.0, gt=0)


class _LayerTerm(_Term):
    layer_map: LayerMapKind = "uniform"
    pairs: list[tuple[int, int]] | None = None

    @model_validator(mode="after")
    def _pairs_given(self) -> "_LayerTerm":
        if self.layer_map == "pairs" and not self.pairs:
            raise ValueError("layer_map 'pairs' needs pairs: [[teacher_layer, student_layer], ...]")
        if self.layer_map != "pairs" and self.pairs is not None:
            raise ValueError(f"pairs is only read with layer_map 'pairs', not '{self.layer_map}'")
        return self


class HiddenLoss(_LayerTerm):
    """Hidden-state MSE or cosine per mapped layer; a learned projection is added when widths differ."""

    name: Literal["hidden_mse", "hidden_cosine"]


class PKDLoss(_LayerTerm):
    """Patient KD: MSE of L2-normalised pooled vectors of mapped layers."""

    name: Literal["pkd"]
    layer_map: LayerMapKind = "skip"
    pooling: Literal["cls", "mean"] = "cls"


class AttentionLoss(_LayerTerm):
    """``attention_mse``: TinyBERT MSE of pre-softmax scores; ``attention_kl``: MiniLM KL of attention maps."""

    name: Literal["attention_mse", "attention_kl"]


class ValueRelationLoss(_LayerTerm):
    """MiniLM value-relation KL, by default between the last layers only."""

    name: Literal["value_relation"]
    layer_map: LayerMapKind = "last"
    relation_heads: int | None = Field(None, gt=0)


class UniversalKDLoss(_Term):
    """Universal-KD (Wu et al. 2021): per-layer probe logits, student layer i matched to an attention mixture of the
    teacher layers' probe logits. Teacher probes are fitted first on the frozen teacher (``probe_epochs`` of Adam at
    ``probe_lr`` over its pooled states, stored); student probes are trained with the student. ``attention_grad``
    lets gradients reach the student probes through the attention weights too, as in the formula.
    ``student_modules`` names submodules whose outputs are the student's layers (for students that are not
    transformers, e.g. the LSTM layers of a BiLSTM); by default its blocks' hidden states 1..N are used."""

    name: Literal["universal_kd"]
    temperature: float = Field(1.0, gt=0)
    t2_scaling: bool = False
    pooling: Literal["cls", "mean"] = "cls"
    probe_epochs: int = Field(3, gt=0)
    probe_lr: float = Field(1e-3, gt=0)
    attention_grad: bool = True
    student_modules: list[str] | None = None


class LabelSmoothingLoss(_Term):
    """Label smoothing (teacher-free): soft-CE to targets with 1 − ε on the true class and ε/(C−1) on the others.
    It replaces ``ce`` rather than sitting beside it."""

    name: Literal["label_smoothing"]
    epsilon: float = Field(0.1, ge=0, lt=1)


class ConfidencePenaltyLoss(_Term):
    """Confidence penalty (teacher-free, Pereyra et al. 2017): CE − β·H(σ(z_s)). It replaces ``ce``."""

    name: Literal["confidence_penalty"]
    beta: float = Field(0.1, ge=0)


class BetaSmoothingLoss(_Term):
    """Beta smoothing (teacher-free, Zhang & Sabuncu 2020): soft-CE to instance-specific targets
    b_i·onehot(y_i) + (1 − b_i)/(C−1), b ~ Beta(a, 1) assigned by the rank of an EMA copy's true-class confidence.

    The paper's L = (1 − α)·CE + α·soft-CE(t_i) is two entries: ``ce`` with weight 1 − α and ``beta_smoothing``
    with weight α (default α = 0.6, so this term's weight defaults to 0.6). The EMA decay at update t is
    min(1 − 1/(t+1), ``ema_decay``)."""

    name: Literal["beta_smoothing"]
    weight: float = Field(0.6, ge=0)
    a: float = Field(3.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)


class RelationLoss(_LayerTerm):
    """CKD (Park et al. 2021) relation terms on hidden states, no projection needed between widths:
    ``wr_pair`` (word relation, token pairs of each mapped layer, averaged over the mapped pairs), ``ltr_pair`` and
    ``ltr_angle`` (layer transforming relation over the stacked mapped layers of each token; ``ltr_angle`` uses all
    triples of distinct layers, so it needs at least 3 mapped layers). Default map: CKD's "emb+skip"."""

    name: Literal["wr_pair", "ltr_pair", "ltr_angle"]
    layer_map: LayerMapKind = "emb_skip"


class WordAngleLoss(RelationLoss):
    """CKD angle word relation (``wr_angle``): token triples whose neighbours lie within ±window//2 of the centre
    (the paper's 21 = ±10)."""

    name: Literal["wr_angle"]
    window: int = Field(21, ge=3)


class RWKDLoss(_Term):
    """RW-KD (Lu et al. 2021): per-sample L_i = (1 − λ_i)·CE_i + λ_i·T²·KL(σ(z_t/T) ‖ σ(z_s/T)), λ_i ∈ [0, 1]
    learned on a meta split carved from the training data. It replaces ``ce`` and ``kd`` (it contains both).

    ``variant``: ``meta_net`` (a small MLP on per-sample [CE, KD, teacher confidence, teacher p(y)], trained by
    Adam at ``meta_lr`` on the look-ahead meta-gradient; ``meta_hidden`` units) or ``l2rw`` (Ren et al. 2018:
    λ from the clamped negative meta-gradient of per-sample perturbation weights, recomputed every batch).
    ``virtual_lr``: the virtual SGD step of the look-ahead (null = ``training.learning_rate``). ``meta_fraction``
    of the training split (by ``data.seed``) becomes the meta set and leaves training; ``meta_batch_size`` (null
    = ``training.batch_size``); a meta step every ``meta_every`` training batches (λ from the current network in
    between; with ``l2rw``, λ = 0.5 in between). See docs/rwkd.md."""

    name: Literal["rwkd"]
    temperature: float = Field(2.0, gt=0)
    t2_scaling: bool = True
    variant: Literal["meta_net", "l2rw"] = "meta_net"
    meta_lr: float = Field(1e-3, gt=0)
    meta_hidden: int = Field(16, gt=0)
    virtual_lr: float | None = Field(None, gt=0)
    meta_fraction: float = Field(0.1, gt=0, lt=1)
    meta_batch_size: int | None = Field(None, gt=0)
    meta_every: int = Field(1, gt=0)


LossConfig = Annotated[
    Union[CELoss, KDLoss, LogitMSELoss, HiddenLoss, PKDLoss, AttentionLoss, ValueRelationLoss, UniversalKDLoss,
          LabelSmoothingLoss, ConfidencePenaltyLoss, BetaSmoothingLoss, RelationLoss, WordAngleLoss,
          RWKDLoss],
    Field(discriminator="name"),
]
LOSS_NAMES = ("ce", "kd", "soft_ce", "logit_mse", "hidden_mse", "hidden_cosine", "pkd", "attention_mse",
              "attention_kl", "value_relation", "universal_kd",
              "label_smoothing", "confidence_penalty", "beta_smoothing", "wr_pair", "wr_angle", "ltr_pair", "ltr_angle",
              "rwkd")
TOKEN_ALIGNED_LOSSES = frozenset({"hidden_mse", "hidden_cosine", "attention_mse", "attention_kl", "value_relation",
                                  "wr_pair", "wr_angle", "ltr_pair", "ltr_angle"})


class EvaluationConfig(_Strict):
    """What the final report measures."""

    split: Literal["validation", "test"] = "test"
    latency_batch_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 32])
    latency_repeats: int = Field(20, gt=0)
    dm_alpha: float = Field(0.5, ge=0, le=1)


# losses that never read the teacher: a recipe with only these may leave the teacher out
TEACHER_FREE_LOSSES = frozenset({"ce", "label_smoothing", "confidence_penalty", "beta_smoothing"})


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
    """A complete distillation run.

    ``teacher`` may be left out (or null) when no loss reads it and the student does not need it (``student.init``
    ``pretrained``, or ``config`` with ``student.model``): only the student is trained and reported.
    ``generations`` turns the run into born-again self-distillation (see :class:`GenerationsConfig`).
    """

    name: str = "distill"
    task: Literal["classification"] = "classification"
    data: DataConfig
    teacher: TeacherConfig | None = None
    student: StudentConfig
    losses: list[LossConfig] = Field(min_length=1)
    training: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    output_dir: str | None = None
    generations: GenerationsConfig | None = None

    @model_validator(mode="after")
    def _teacher_given_where_needed(self) -> "Recipe":
        # ConfigError, not ValueError: pydantic would file a ValueError under the whole recipe, not under a key
        free = ", ".join(sorted(TEACHER_FREE_LOSSES))
        if self.teacher is None:
            for i, term in enumerate(self.losses):
                if term.name not in TEACHER_FREE_LOSSES:
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
    def _bilstm_has_no_attention(self) -> "Recipe":
        if self.student.init == "bilstm":
            for i, term in enumerate(self.losses):
                if term.name in ("attention_mse", "attention_kl", "value_relation"):
                    raise ConfigError(f"recipe key 'losses[{i}]': '{term.name}' compares attention, but a BiLSTM "
                                      f"student (student.init 'bilstm') has none; use logit, hidden-state, relation "
                                      f"or universal_kd losses")
        return self

    def student_needs_teacher(self) -> bool:
        return self.student.init in ("teacher_layers", "bilstm") or (self.student.init == "config"
                                                                      and not self.student.model)

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")

    def needs_token_alignment(self) -> bool:
        return any(term.name in TOKEN_ALIGNED_LOSSES for term in self.losses)

    def needs_attentions(self) -> bool:
        return any(term.name == "attention_kl" for term in self.losses)


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in LOSS_NAMES and parts and parts[-1].startswith("["):
            continue  # pydantic adds the discriminator value as a path step; it is not a key the user wrote
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<recipe>"


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    key = _key_path(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        return f"recipe key '{key}' is unknown{_valid_keys_hint(first['loc'])}"
    if kind == "union_tag_invalid":
        return f"recipe key '{key}.name': unknown loss {first['input'].get('name')!r}; valid: {', '.join(LOSS_NAMES)}"
    if kind == "union_tag_not_found":
        return f"recipe key '{key}': a loss needs 'name', one of: {', '.join(LOSS_NAMES)}"
    if kind == "missing":
        return f"recipe key '{key}' is required"
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"recipe key '{key}': {message}{shown}"


def _valid_keys_hint(loc: tuple) -> str:
    section = {"data": DataConfig, "teacher": TeacherConfig, "student": StudentConfig, "training": TrainConfig,
               "evaluation": EvaluationConfig, "generations": GenerationsConfig}
    if len(loc) == 1:
        model = Recipe
    elif loc[0] == "losses" and len(loc) >= 3:
        model = {"ce": CELoss, "kd": KDLoss, "soft_ce": KDLoss, "logit_mse": LogitMSELoss, "hidden_mse": HiddenLoss,
                 "hidden_cosine": HiddenLoss, "pkd": PKDLoss, "attention_mse": AttentionLoss,
                 "attention_kl": AttentionLoss, "value_relation": ValueRelationLoss,
                 "universal_kd": UniversalKDLoss,
                 "label_smoothing": LabelSmoothingLoss, "confidence_penalty": ConfidencePenaltyLoss,
                 "beta_smoothing": BetaSmoothingLoss, "wr_pair": RelationLoss, "wr_angle": WordAngleLoss,
                 "ltr_pair": RelationLoss, "ltr_angle": RelationLoss,
                 "rwkd": RWKDLoss}.get(loc[2])
    elif loc[0] == "teacher" and len(loc) >= 3 and loc[1] == "finetune":
        model = TrainConfig
    else:
        model = section.get(loc[0]) if len(loc) == 2 else None
    return f"; valid keys: {', '.join(model.model_fields)}" if model else ""


def parse_recipe(data: Any) -> Recipe:
    """Validate a recipe given as a mapping; raise :class:`ConfigError` with one line on any problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"a recipe must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


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
