"""Loss terms: the glue between a recipe's loss entries and the tensors-only losses, and their registry.

A term is a typed config (the recipe entry, validated at the edge) plus an ``nn.Module`` that reads captured
representations and calls a loss from :mod:`kdkit.losses`. Each family of terms is one file of this package,
registered where it is defined with :func:`register`; the recipe's loss union, the key hints of errors, which
losses are teacher-free or need aligned tokens, what a term asks the teacher cache for and ``kdkit info`` are all
read from the registry. Adding a loss is one new file here (every module of the package is imported).

A term knows which representations it needs from the student and the teacher (hidden states, attention maps,
hooked Q/K/V outputs), which layers it pairs, and which distillation-only parameters it owns (projections,
probes, EMA copies, meta-learners). Terms are held by :class:`~kdkit.engine.trainer.DistillationModule` next to the
student, so their parameters are optimised with it and saved in checkpoints, yet never exported with the student.

Conventions (documented defaults):
- a term over several layer pairs is the *mean* over pairs, so its weight does not grow with depth;
- when student and teacher widths differ, one learned projection (student width → teacher width) is shared by
  all pairs of a term, as in TinyBERT's single W_h;
- layer indices are hidden-state indices (0 = embedding output, l = block l); attention terms need l ≥ 1;
- a term's value is a mean over its *unit* (``example``, ``token`` or ``target``) in the micro-batch; the trainer
  rescales it by the micro-batch's share of the units of the whole optimiser step (all accumulation steps and
  processes), so results do not depend on how a step is split.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from kdkit import maps
from kdkit.capture import Representations, hidden_size, num_layers
from kdkit.errors import ConfigError
from kdkit.losses import Projection
from kdkit.schema import LayerIndex, Strict, Weight
from kdkit.signals.cache import SignalSpec

LayerMapKind = Literal["pairs", "uniform", "skip", "last_k", "emb_skip", "last"]


class LossConfig(Strict):
    """A loss entry of a recipe: ``weight`` here (0..1e6), and in each subclass ``name``, a ``Literal`` of the names
    it serves. Bounds of the subclasses' fields use the shared types of :mod:`kdkit.schema`."""

    weight: Weight = 1.0


class LayerMapConfig(LossConfig):
    """A loss over (teacher layer, student layer) pairs: a generated ``layer_map`` or explicit ``pairs`` (at most
    256, indices 0..4095; checked against both models' depths when the term is built)."""

    layer_map: LayerMapKind = "uniform"
    pairs: list[tuple[LayerIndex, LayerIndex]] | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _pairs_given(self) -> "LayerMapConfig":
        if self.layer_map == "pairs" and not self.pairs:
            raise ValueError("layer_map 'pairs' needs pairs: [[teacher_layer, student_layer], ...]")
        if self.layer_map != "pairs" and self.pairs is not None:
            raise ValueError(f"pairs is only read with layer_map 'pairs', not '{self.layer_map}'")
        return self


@dataclass
class Needs:
    """What a forward pass must expose; merged over terms and turned into ``Capture`` keyword arguments."""

    hidden_states: bool = False
    attentions: bool = False
    modules: set[str] = field(default_factory=set)

    def merge(self, other: "Needs") -> "Needs":
        return Needs(self.hidden_states or other.hidden_states, self.attentions or other.attentions,
                     self.modules | other.modules)

    def capture_kwargs(self) -> dict:
        return {"hidden_states": self.hidden_states, "attentions": self.attentions, "modules": sorted(self.modules)}


@dataclass
class CacheRequest:
    """What a term reads from the teacher, in the terms of a teacher cache: logits (``raw_logits`` when log-
    probabilities would not do), per-token hidden states of ``hidden`` layers, pooled vectors of ``pooled``."""

    logits: bool = False
    raw_logits: bool = False
    hidden: frozenset[int] = frozenset()
    pooled: frozenset[int] = frozenset()
    pooling: str | None = None


@dataclass
class SetupContext:
    """What :meth:`Term.setup` may use, once, before training: the frozen teacher, the tokenised training split
    (which :meth:`carve` may shrink), its collator and the run's settings."""

    teacher: nn.Module | None
    train: Any
    collator: Any
    device: str = "cpu"
    data_seed: int = 0
    batch_size: int = 32
    learning_rate: float = 5e-5

    def carve(self, fraction: float) -> Any:
        """Move ``fraction`` of the training split (a permutation seeded by ``data_seed``; at least one example,
        at least one left) out of ``train`` and return it: a held-out set that training never sees."""
        count = max(1, round(fraction * len(self.train)))
        if count >= len(self.train):
            raise ConfigError(f"meta_fraction {fraction} of {len(self.train)} training examples leaves none to "
                              f"train on")
        order = np.random.default_rng(self.data_seed).permutation(len(self.train))
        carved = self.train.select(np.sort(order[:count]))
        self.train = self.train.select(np.sort(order[count:]))
        return carved


class Term(nn.Module):
    """Base class: ``forward(student, teacher, batch)`` returns the term's scalar loss (before its weight).

    Class attributes, read by the registry and the pipeline:
    - ``config``: the typed recipe entry; ``reads_teacher``: False for teacher-free terms (``teacher`` is then
      None); ``token_aligned``: compares positions, so teacher and student must read the same tokens;
      ``eager_attention``: reads attention maps (models load with eager attention); ``reads_attention``:
      compares attention (maps, scores or Q/K/V), which some students do not have; ``tasks``: the tasks it
      serves (None: any); ``unit``: what its value is a mean over (``example``, ``token`` or ``target``, see
    :func:`count_units`); ``unlabeled_rows``: False for a term that needs every row's gold label (rows without
    one, label -100, come from ``data.augment`` and ``data.unlabeled``).
    Hooks: :meth:`setup` once before training (fit probes on the teacher, carve a meta split),
    :meth:`after_optimizer_step` (an EMA copy), :meth:`extra_logs` (statistics beside ``loss_<name>``),
    :meth:`cache_request` (what the teacher cache must hold for it).
    """

    config: ClassVar[type[LossConfig]] = LossConfig
    reads_teacher: ClassVar[bool] = True
    token_aligned: ClassVar[bool] = False
    eager_attention: ClassVar[bool] = False
    reads_attention: ClassVar[bool] = False
    tasks: ClassVar[tuple[str, ...] | None] = None
    unit: ClassVar[str] = "example"
    unlabeled_rows: ClassVar[bool] = True

    def __init__(self, cfg: LossConfig, teacher: nn.Module | None = None, student: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.name = cfg.name
        self.weight = cfg.weight
        self.student_needs = Needs()
        self.teacher_needs = Needs()

    def forward(self, student: Representations, teacher: Representations | None, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def setup(self, ctx: SetupContext) -> None:
        """Called once before training with the frozen teacher and the training split; nothing by default."""

    def cache_request(self) -> CacheRequest | str:
        """What a teacher cache must store for this term, or the reason it needs the live teacher."""
        if not self.reads_teacher:
            return CacheRequest()
        return f"loss '{self.name}' needs the live teacher (what it reads is not cached)"

    def after_optimizer_step(self, student: nn.Module) -> None:
        """Called with the student after each optimiser step; nothing by default."""

    def extra_logs(self) -> dict[str, float]:
        """Statistics the term gathered over the logging window (e.g. RW-KD's λ), logged beside ``loss_<name>``
        and reset; the trainer calls it at each log. Nothing by default."""
        return {}


def count_units(unit: str, batch: dict) -> torch.Tensor:
    """How many of ``unit`` a batch holds: its examples, its real (unpadded) tokens, or its target tokens (the
    tokens a language model is trained to predict, ``labels`` other than -100)."""
    if unit == "token":
        return batch["attention_mask"].sum()
    if unit == "target":
        return (batch["labels"] != -100).sum()
    rows = batch["input_ids"] if "input_ids" in batch else batch["labels"]  # a multimodal batch has no ids
    return torch.tensor(rows.shape[0], device=rows.device)


# --- the registry -------------------------------------------------------------------------------------------------

TERMS: dict[str, type[Term]] = {}
CONFIGS: dict[str, type[LossConfig]] = {}


def register(*names: str, config: type[LossConfig] | None = None):
    """Class decorator: ``cls`` builds the recipe entries named ``names``, validated by ``config`` (default
    ``cls.config``), whose ``name`` Literal must hold each of them."""
    def decorate(cls: type[Term]) -> type[Term]:
        schema = config or cls.config
        served = typing.get_args(schema.model_fields["name"].annotation)
        for name in names:
            if name not in served:
                raise ValueError(f"{cls.__name__}: '{name}' is not a value of {schema.__name__}.name")
            if name in TERMS and TERMS[name] is not cls:
                raise ValueError(f"loss name '{name}' is registered twice ({TERMS[name].__name__}, {cls.__name__})")
            TERMS[name], CONFIGS[name] = cls, schema
        return cls
    return decorate


_OWN_LOSSES_ONLY: dict[str, frozenset[str]] = {}


def own_losses_only(task: str, also: tuple[str, ...] = ()) -> None:
    """Make ``task`` accept only the losses that name it in ``tasks``, not the task-agnostic ones (``tasks``
    None) except those named in ``also``: for a task whose models expose neither class logits nor comparable hidden
    states (retrieval), or class logits only (multimodal: ``ce``, ``kd``, ...)."""
    _OWN_LOSSES_ONLY[task] = frozenset(also)


def _serves(name: str, cls: type[Term], task: str | None) -> bool:
    if task is None:
        return True
    if cls.tasks is not None:
        return task in cls.tasks
    return task not in _OWN_LOSSES_ONLY or name in _OWN_LOSSES_ONLY[task]


def loss_names(task: str | None = None) -> list[str]:
    """Every registered loss name (the ones ``task`` can use), in registration order."""
    return [name for name, cls in TERMS.items() if _serves(name, cls, task)]


def config_classes(task: str | None = None) -> list[type[LossConfig]]:
    """The distinct config classes of the losses ``task`` can use: the members of its recipe's loss union."""
    return list(dict.fromkeys(CONFIGS[name] for name in loss_names(task)))


def config_class(name: str) -> type[LossConfig] | None:
    return CONFIGS.get(name)


def term_class(name: str) -> type[Term] | None:
    return TERMS.get(name)


def teacher_free(name: str) -> bool:
    return name in TERMS and not TERMS[name].reads_teacher


def teacher_free_names(task: str | None = None) -> list[str]:
    return [name for name in loss_names(task) if not TERMS[name].reads_teacher]


def build_term(cfg: LossConfig, teacher: nn.Module | None, student: nn.Module) -> Term:
    """One term from its validated config; layer maps are checked against both models' depths here."""
    cls = TERMS.get(cfg.name)
    if cls is None:
        raise ConfigError(f"loss '{cfg.name}' is not registered; valid: {', '.join(TERMS)}")
    if cls.reads_teacher and teacher is None:
        raise ConfigError(f"loss '{cfg.name}' needs a teacher; without one only the teacher-free losses apply "
                          f"({', '.join(teacher_free_names())})")
    return cls(cfg, teacher, student)


def build_terms(configs, teacher: nn.Module | None, student: nn.Module) -> list[Term]:
    terms = [build_term(cfg, teacher, student) for cfg in configs]
    names = [t.name for t in terms]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        # each term is logged under its name; two of one name would be summed into one log line
        for n in duplicates:
            for i, t in enumerate(x for x in terms if x.name == n):
                t.name = f"{n}_{i}"
    return terms


def signal_spec(terms: list[Term], num_classes: int, *, top_k: int = 32, dense_max: int = 1024
                ) -> tuple[SignalSpec | None, str]:
    """What a teacher cache must store for ``terms``, or ``(None, reason)`` when they need a live teacher.

    Logits are stored dense when the class axis has at most ``dense_max`` entries (float32 when they are all
    that is stored, exact and still a few bytes per example), else as top-k log-probabilities; hidden states
    of the layers that hidden-state terms pair (MSE, cosine, CKD relations) and pooled vectors for PKD (and
    of every teacher block for Universal-KD) are stored in float16.
    """
    logits = raw = False
    hidden: set[int] = set()
    pooled: set[int] = set()
    poolings: set[str] = set()
    for term in terms:
        request = term.cache_request()
        if isinstance(request, str):
            return None, request
        logits |= request.logits
        raw |= request.raw_logits
        hidden |= request.hidden
        pooled |= request.pooled
        if request.pooling is not None:
            poolings.add(request.pooling)
    if len(poolings) > 1:
        return None, ("pooled-state terms (pkd, universal_kd) pool differently (cls and mean); a cache stores one "
                      "pooling")
    if not (logits or hidden or pooled):
        return None, "no loss reads the teacher"
    if raw and num_classes > dense_max:
        return None, "logit_mse needs raw logits, which a top-k cache does not keep"
    dense = num_classes <= dense_max
    spec = SignalSpec(logits=("dense" if dense else "topk") if logits else None, top_k=top_k,
                      hidden_layers=tuple(sorted(hidden)), pooled_layers=tuple(sorted(pooled)),
                      pooling=poolings.pop() if poolings else "cls",
                      dtype="float32" if dense and not (hidden or pooled) else "float16")
    return spec, ""


# --- shared by the families that pair layers ----------------------------------------------------------------------

def layer_pairs(cfg: LayerMapConfig, n_teacher: int, n_student: int, min_index: int = 0) -> list[tuple[int, int]]:
    if cfg.layer_map == "last":
        pairs = [(n_teacher, n_student)]
    else:
        pairs = maps.build_layer_map(cfg.layer_map, n_teacher, n_student,
                                     pairs=[tuple(p) for p in cfg.pairs] if cfg.pairs else None)
    bad = [p for p in pairs if min(p) < min_index]
    if bad:
        raise ConfigError(f"loss '{cfg.name}': layer pair {bad[0]} uses the embedding output (index 0), which has "
                          f"no attention; use block indices {min_index}..{n_teacher} (teacher) and "
                          f"{min_index}..{n_student} (student)")
    if not pairs:
        raise ConfigError(f"loss '{cfg.name}': layer_map '{cfg.layer_map}' pairs no layers for a {n_teacher}-layer "
                          f"teacher and a {n_student}-layer student")
    return pairs


class PairedTerm(Term):
    """A term averaged over (teacher layer, student layer) pairs, with a projection when widths differ."""

    project_widths: ClassVar[bool] = False
    min_index: ClassVar[int] = 0

    def __init__(self, cfg: LayerMapConfig, teacher: nn.Module, student: nn.Module):
        super().__init__(cfg, teacher, student)
        self.pairs = layer_pairs(cfg, num_layers(teacher), num_layers(student), self.min_index)
        d_s, d_t = hidden_size(student), hidden_size(teacher)
        self.projection = Projection(d_s, d_t) if self.project_widths and d_s != d_t else None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.projection is None else self.projection(x)

    def present_pairs(self, student: Representations) -> list[tuple[int, int]]:
        """The pairs whose student layer the student computed: all of them, except in a depth-reduced DynaBERT
        sub-network, whose dropped blocks leave ``None`` (:mod:`kdkit.engine.adaptive`)."""
        states = student.hidden_states
        return self.pairs if states is None else [(t, s) for t, s in self.pairs if states[s] is not None]

    def forward(self, student, teacher, batch):
        values = [self.pair_loss(student, teacher, batch, t, s) for t, s in self.present_pairs(student)]
        return torch.stack(values).mean()

    def pair_loss(self, student, teacher, batch, t_layer: int, s_layer: int) -> torch.Tensor:
        raise NotImplementedError

    def teacher_layers(self) -> frozenset[int]:
        return frozenset(t for t, _ in self.pairs)
