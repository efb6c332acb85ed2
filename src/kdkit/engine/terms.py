"""Loss terms: the glue between a recipe's loss entries and the tensors-only losses.

A term knows which representations it needs from the student and the teacher (hidden states, attention maps,
hooked Q/K/V outputs), which layers it pairs, and which distillation-only parameters it owns (projections).
Terms are ``nn.Module`` s held by :class:`~kdkit.engine.trainer.DistillationModule` next to the student, so their
parameters are optimised with it and saved in checkpoints, yet never exported with the student.

Conventions chosen here (documented defaults):
- a term over several layer pairs is the *mean* over pairs, so its weight does not grow with depth;
- when student and teacher widths differ, one learned projection (student width → teacher width) is shared by
  all pairs of a term, as in TinyBERT's single W_h;
- layer indices are hidden-state indices (0 = embedding output, l = block l); attention terms need l ≥ 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from kdkit import losses, maps
from kdkit.capture import (Capture, Representations, attention_modules, attention_scores, hidden_size, num_heads,
                           num_layers)
from kdkit.config import (AttentionLoss, CELoss, HiddenLoss, KDLoss, LogitMSELoss, PKDLoss, ValueRelationLoss,
                          _LayerTerm)
from kdkit.config import UniversalKDLoss
from kdkit.config import BetaSmoothingLoss, ConfidencePenaltyLoss, LabelSmoothingLoss
from kdkit.config import RelationLoss, WordAngleLoss
from kdkit.config import RWKDLoss
from kdkit.engine.probes import pool, train_teacher_probes
from kdkit.errors import ConfigError
from kdkit.signals.cache import SignalSpec


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


def _student_mask(batch: dict) -> torch.Tensor:
    return batch["attention_mask"]


class Term(nn.Module):
    """Base class: ``forward(student, teacher, batch)`` returns the term's scalar loss (before its weight).

    ``reads_teacher`` is False for teacher-free terms (``teacher`` is then None or ignored); a recipe none of whose
    terms reads the teacher trains without running it. :meth:`after_optimizer_step` lets a term keep state that
    follows the student outside the optimiser (an EMA copy); the trainer calls it after every optimiser step.
    """

    reads_teacher = True

    def __init__(self, name: str, weight: float):
        super().__init__()
        self.name = name
        self.weight = weight
        self.student_needs = Needs()
        self.teacher_needs = Needs()

    def forward(self, student: Representations, teacher: Representations | None, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def after_optimizer_step(self, student: nn.Module) -> None:
        """Called with the student after each optimiser step; nothing by default."""

    def extra_logs(self) -> dict[str, float]:
        """Statistics the term gathered over the logging window (e.g. RW-KD's λ), logged beside ``loss_<name>``
        and reset; the trainer calls it at each log. Nothing by default."""
        return {}


class CETerm(Term):
    """Hard-label cross-entropy of the student (no teacher needed)."""

    reads_teacher = False

    def forward(self, student, teacher, batch):
        return losses.cross_entropy(student.logits, batch["labels"])


class KDTerm(Term):
    """Hinton KD (``kd``: T²·KL) or soft cross-entropy (``soft_ce``) between logits."""

    def __init__(self, cfg: KDLoss):
        super().__init__(cfg.name, cfg.weight)
        self.fn = losses.kl_divergence if cfg.name == "kd" else losses.soft_cross_entropy
        self.kwargs = dict(temperature=cfg.temperature, t2_scaling=cfg.t2_scaling, temperature_on=cfg.temperature_on)

    def forward(self, student, teacher, batch):
        return self.fn(student.logits, teacher.logits, **self.kwargs)


class LogitMSETerm(Term):
    def __init__(self, cfg: LogitMSELoss):
        super().__init__(cfg.name, cfg.weight)
        self.temperature = cfg.temperature

    def forward(self, student, teacher, batch):
        return losses.logit_mse(student.logits, teacher.logits, temperature=self.temperature)


def _layer_pairs(cfg: _LayerTerm, n_teacher: int, n_student: int, min_index: int = 0) -> list[tuple[int, int]]:
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


class _PairedTerm(Term):
    """A term averaged over (teacher layer, student layer) pairs, with a projection when widths differ."""

    def __init__(self, cfg: _LayerTerm, teacher: nn.Module, student: nn.Module, *, project: bool, min_index: int = 0):
        super().__init__(cfg.name, cfg.weight)
        self.pairs = _layer_pairs(cfg, num_layers(teacher), num_layers(student), min_index)
        d_s, d_t = hidden_size(student), hidden_size(teacher)
        self.projection = losses.Projection(d_s, d_t) if project and d_s != d_t else None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.projection is None else self.projection(x)

    def forward(self, student, teacher, batch):
        values = [self.pair_loss(student, teacher, batch, t, s) for t, s in self.pairs]
        return torch.stack(values).mean()

    def pair_loss(self, student, teacher, batch, t_layer: int, s_layer: int) -> torch.Tensor:
        raise NotImplementedError


class HiddenTerm(_PairedTerm):
    """TinyBERT/DistilBERT-style hidden-state MSE or cosine per mapped layer."""

    def __init__(self, cfg: HiddenLoss, teacher, student):
        super().__init__(cfg, teacher, student, project=True)
        self.fn = losses.hidden_mse if cfg.name == "hidden_mse" else losses.hidden_cosine
        self.student_needs = self.teacher_needs = Needs(hidden_states=True)

    def pair_loss(self, student, teacher, batch, t_layer, s_layer):
        return self.fn(self.project(student.hidden_states[s_layer]), teacher.hidden_states[t_layer],
                       mask=_student_mask(batch))


class PKDTerm(_PairedTerm):
    """Patient KD on pooled vectors of the mapped layers (all pairs in one call, as the loss expects)."""

    def __init__(self, cfg: PKDLoss, teacher, student):
        super().__init__(cfg, teacher, student, project=True)
        self.pooling = cfg.pooling
        self.student_needs = self.teacher_needs = Needs(hidden_states=True)

    def forward(self, student, teacher, batch):
        s = torch.stack([self.project(student.pooled(s_l, self.pooling)) for _, s_l in self.pairs], dim=1)
        t = torch.stack([teacher.pooled(t_l, self.pooling) for t_l, _ in self.pairs], dim=1)
        return losses.pkd_loss(s, t)


class AttentionKLTerm(_PairedTerm):
    """MiniLM: KL between teacher and student attention distributions of mapped blocks."""

    def __init__(self, cfg: AttentionLoss, teacher, student):
        super().__init__(cfg, teacher, student, project=False, min_index=1)
        self.student_needs = self.teacher_needs = Needs(attentions=True)

    def pair_loss(self, student, teacher, batch, t_layer, s_layer):
        return losses.attention_kl(student.attentions[s_layer - 1], teacher.attentions[t_layer - 1],
                                   mask=_student_mask(batch))


class _HookedTerm(_PairedTerm):
    """Terms that read Q/K/V linear outputs of mapped blocks through forward hooks."""

    roles: tuple[str, ...] = ()

    def __init__(self, cfg, teacher, student):
        super().__init__(cfg, teacher, student, project=False, min_index=1)
        self.t_names = [attention_modules(teacher)[t - 1] for t, _ in self.pairs]
        self.s_names = [attention_modules(student)[s - 1] for _, s in self.pairs]
        self.t_heads, self.s_heads = num_heads(teacher), num_heads(student)
        self.teacher_needs = Needs(modules={n[r] for n in self.t_names for r in self.roles})
        self.student_needs = Needs(modules={n[r] for n in self.s_names for r in self.roles})

    def forward(self, student, teacher, batch):
        mask = _student_mask(batch)
        values = [self.hooked_loss(student.modules, teacher.modules, s_n, t_n, mask)
                  for s_n, t_n in zip(self.s_names, self.t_names)]
        return torch.stack(values).mean()


class AttentionScoreTerm(_HookedTerm):
    """TinyBERT: MSE of pre-softmax attention scores Q Kᵀ/√d, rebuilt from the hooked Q and K projections."""

    roles = ("query", "key")

    def hooked_loss(self, s_mod, t_mod, s_names, t_names, mask):
        s = attention_scores(s_mod[s_names["query"]], s_mod[s_names["key"]], self.s_heads)
        t = attention_scores(t_mod[t_names["query"]], t_mod[t_names["key"]], self.t_heads)
        return losses.attention_score_mse(s, t, mask=mask)


class ValueRelationTerm(_HookedTerm):
    """MiniLM: KL between value-relation distributions softmax(V Vᵀ/√d) of mapped blocks."""

    roles = ("value",)

    def __init__(self, cfg: ValueRelationLoss, teacher, student):
        super().__init__(cfg, teacher, student)
        self.relation_heads = cfg.relation_heads or self.s_heads
        for who, model in (("teacher", teacher), ("student", student)):
            if hidden_size(model) % self.relation_heads:
                raise ConfigError(f"loss 'value_relation': relation_heads {self.relation_heads} does not divide the "
                                  f"{who} width {hidden_size(model)}; choose a common divisor")

    def hooked_loss(self, s_mod, t_mod, s_names, t_names, mask):
        return losses.value_relation_kl(s_mod[s_names["value"]], t_mod[t_names["value"]], self.relation_heads,
                                        mask=mask)


class UniversalKDTerm(Term):
    """Universal-KD (Wu et al. 2021): per-layer probe logits matched through attention over the teacher layers.

    Layers are block outputs: hidden states 1..N of each model (the embedding output has no probe), or, with
    ``student_modules``, the outputs of those hooked submodules (a BiLSTM's LSTM layers), pooled by the term's
    ``pooling``. The teacher probes are fitted by :meth:`prepare` before distillation and stay frozen (saved in
    checkpoints, never optimised); the student probes are trained with the student. Neither is exported.
    """

    def __init__(self, cfg: UniversalKDLoss, teacher: nn.Module, student: nn.Module):
        super().__init__(cfg.name, cfg.weight)
        self.cfg = cfg
        self.pooling = cfg.pooling
        self.num_classes = teacher.config.num_labels
        self.teacher_layers = list(range(1, num_layers(teacher) + 1))
        self.teacher_probes = losses.ProbeSet([hidden_size(teacher)] * len(self.teacher_layers),
                                              self.num_classes).requires_grad_(False)
        self.teacher_needs = Needs(hidden_states=True)
        self.student_modules = list(cfg.student_modules or [])
        if self.student_modules:
            self.student_needs = Needs(modules=set(self.student_modules))
            widths = _hooked_widths(student, self.student_modules)
        else:
            self.student_needs = Needs(hidden_states=True)
            widths = [hidden_size(student)] * num_layers(student)
        self.student_probes = losses.ProbeSet(widths, self.num_classes)
        self.prepared = False

    def prepare(self, teacher: nn.Module, train, collator, device: str = "cpu") -> None:
        """Fit (or read back) the teacher probes on the frozen teacher over the training split."""
        fitted = train_teacher_probes(teacher, train, collator, self.teacher_layers, self.num_classes,
                                      pooling=self.pooling, epochs=self.cfg.probe_epochs, lr=self.cfg.probe_lr,
                                      device=device)
        self.teacher_probes.load_state_dict(fitted.state_dict())
        self.prepared = True

    def student_pooled(self, student: Representations) -> list[torch.Tensor]:
        if self.student_modules:
            return [pool(student.modules[n], student.attention_mask, self.pooling) for n in self.student_modules]
        return [student.pooled(layer, self.pooling) for layer in range(1, len(self.student_probes.probes) + 1)]

    def forward(self, student, teacher, batch):
        if not self.prepared:
            raise ConfigError("loss 'universal_kd': the teacher probes are not fitted; call the term's "
                              "prepare(teacher, train_dataset, collator) before training (kdkit.api.distill does)")
        with torch.no_grad():
            t_logits = self.teacher_probes([teacher.pooled(layer, self.pooling) for layer in self.teacher_layers])
        s_logits = self.student_probes(self.student_pooled(student))
        return losses.universal_kd(s_logits, t_logits, self.cfg.temperature, attention_grad=self.cfg.attention_grad,
                                   t2_scaling=self.cfg.t2_scaling)


@torch.no_grad()
def _hooked_widths(model: nn.Module, names: list[str]) -> list[int]:
    """The last-axis width of each hooked submodule's output, from one forward on a two-token input."""
    device = next(model.parameters()).device
    ids = torch.ones(1, 2, dtype=torch.long, device=device)
    captured = Capture(model, modules=names)(input_ids=ids, attention_mask=torch.ones_like(ids)).modules
    return [captured[n].shape[-1] for n in names]


class WordRelationTerm(_PairedTerm):
    """CKD word relation (``wr_pair``, ``wr_angle``) within each mapped layer, averaged over the mapped pairs.

    Relations are compared, not vectors, so widths may differ without a projection."""

    def __init__(self, cfg: RelationLoss, teacher, student):
        super().__init__(cfg, teacher, student, project=False)
        if cfg.name == "wr_angle":
            self.fn, self.kwargs = losses.word_relation_angle, {"window": cfg.window}
        else:
            self.fn, self.kwargs = losses.word_relation_pair, {}
        self.student_needs = self.teacher_needs = Needs(hidden_states=True)

    def pair_loss(self, student, teacher, batch, t_layer, s_layer):
        return self.fn(student.hidden_states[s_layer], teacher.hidden_states[t_layer], mask=_student_mask(batch),
                       **self.kwargs)


class LayerRelationTerm(_PairedTerm):
    """CKD layer transforming relation (``ltr_pair``, ``ltr_angle``): the mapped layers of each model stacked in
    map order into ``(B, K, L, D)`` (teacher indices of the map for the teacher, student indices for the student)."""

    def __init__(self, cfg: RelationLoss, teacher, student):
        super().__init__(cfg, teacher, student, project=False)
        needed = 3 if cfg.name == "ltr_angle" else 2
        if len(self.pairs) < needed:
            raise ConfigError(f"loss '{cfg.name}' relates at least {needed} aligned layers, but layer_map "
                              f"'{cfg.layer_map}' pairs {len(self.pairs)}: {self.pairs}")
        self.fn = losses.layer_relation_angle if cfg.name == "ltr_angle" else losses.layer_relation_pair
        self.student_needs = self.teacher_needs = Needs(hidden_states=True)

    def forward(self, student, teacher, batch):
        s = torch.stack([student.hidden_states[s_l] for _, s_l in self.pairs], dim=1)
        t = torch.stack([teacher.hidden_states[t_l] for t_l, _ in self.pairs], dim=1)
        return self.fn(s, t, mask=_student_mask(batch))


class LabelSmoothingTerm(Term):
    """Label smoothing (teacher-free): soft-CE to targets 1 − ε on the true class, ε/(C−1) on the others."""

    reads_teacher = False

    def __init__(self, cfg: LabelSmoothingLoss):
        super().__init__(cfg.name, cfg.weight)
        self.epsilon = cfg.epsilon

    def forward(self, student, teacher, batch):
        labels = batch["labels"]
        targets = losses.label_smoothing_targets(labels, student.logits.shape[-1], self.epsilon)
        return losses.soft_target_cross_entropy(student.logits, targets.to(student.logits.dtype),
                                                mask=labels != losses.logits.IGNORE_INDEX)


class ConfidencePenaltyTerm(Term):
    """Confidence penalty (teacher-free): CE − β·H(σ(z_s))."""

    reads_teacher = False

    def __init__(self, cfg: ConfidencePenaltyLoss):
        super().__init__(cfg.name, cfg.weight)
        self.beta = cfg.beta

    def forward(self, student, teacher, batch):
        return losses.confidence_penalty(student.logits, batch["labels"], self.beta)


class BetaSmoothingTerm(Term):
    """Beta smoothing (Zhang & Sabuncu 2020): soft-CE to instance-specific targets ranked by an EMA copy.

    The term owns ``ema``, a frozen copy of the student (``requires_grad`` False, always in eval mode): it is in
    the trained module's state, so checkpoints hold it and resume restores it, and it is never exported.
    Each step it scores the batch's true-class confidences, which rank the ``Beta(a, 1)`` draws
    (:func:`~kdkit.losses.beta_smoothing_targets`). After optimiser step t (from 0) it moves towards the student
    with decay ``min(1 − 1/(t+1), ema_decay)`` (Tarvainen & Valpola's schedule: the first update copies the
    student, early ones average, later ones follow slowly). It costs one extra forward pass and one copy of
    the student's weights. Classification only: logits ``(B, C)``, labels ``(B,)``.
    """

    reads_teacher = False

    def __init__(self, cfg: BetaSmoothingLoss, student: nn.Module):
        super().__init__(cfg.name, cfg.weight)
        self.a, self.ema_decay = cfg.a, cfg.ema_decay
        self.ema = copy.deepcopy(student).requires_grad_(False).eval()
        # a buffer, so the step count is checkpointed with the weights it produced
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> "BetaSmoothingTerm":
        super().train(mode)
        self.ema.eval()  # confidences are scored without dropout
        return self

    def forward(self, student, teacher, batch):
        labels = batch["labels"]
        with torch.no_grad():
            ema_logits = self.ema(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            confidences = ema_logits.float().softmax(-1).gather(-1, labels[:, None]).squeeze(-1)
        targets = losses.beta_smoothing_targets(confidences, labels, student.logits.shape[-1], self.a)
        return losses.soft_target_cross_entropy(student.logits, targets.to(student.logits.dtype))

    @torch.no_grad()
    def after_optimizer_step(self, student: nn.Module) -> None:
        # the decay stays on the device: no host synchronisation per step
        decay = (1 - 1 / (self.ema_updates + 1).float()).clamp(max=self.ema_decay)
        for ema, current in zip(self.ema.parameters(), student.parameters()):
            ema.lerp_(current.detach(), (1 - decay).to(ema.dtype))  # ema ← decay·ema + (1 − decay)·current
        for ema, current in zip(self.ema.buffers(), student.buffers()):
            ema.copy_(current)
        self.ema_updates += 1


def build_term(cfg, teacher: nn.Module | None, student: nn.Module) -> Term:
    """One term from its validated config; layer maps are checked against both models' depths here."""
    if isinstance(cfg, CELoss):
        return CETerm(cfg.name, cfg.weight)
    if isinstance(cfg, LabelSmoothingLoss):
        return LabelSmoothingTerm(cfg)
    if isinstance(cfg, ConfidencePenaltyLoss):
        return ConfidencePenaltyTerm(cfg)
    if isinstance(cfg, BetaSmoothingLoss):
        return BetaSmoothingTerm(cfg, student)
    if teacher is None:
        raise ConfigError(f"loss '{cfg.name}' needs a teacher; without one only the teacher-free losses apply (ce, "
                          f"label_smoothing, confidence_penalty, beta_smoothing)")
    if isinstance(cfg, KDLoss):
        return KDTerm(cfg)
    if isinstance(cfg, RWKDLoss):
        return RWKDTerm(cfg, student)
    if isinstance(cfg, LogitMSELoss):
        return LogitMSETerm(cfg)
    if isinstance(cfg, HiddenLoss):
        return HiddenTerm(cfg, teacher, student)
    if isinstance(cfg, PKDLoss):
        return PKDTerm(cfg, teacher, student)
    if isinstance(cfg, AttentionLoss):
        cls = AttentionKLTerm if cfg.name == "attention_kl" else AttentionScoreTerm
        return cls(cfg, teacher, student)
    if isinstance(cfg, ValueRelationLoss):
        return ValueRelationTerm(cfg, teacher, student)
    if isinstance(cfg, UniversalKDLoss):
        return UniversalKDTerm(cfg, teacher, student)
    if isinstance(cfg, RelationLoss):
        return (WordRelationTerm if cfg.name.startswith("wr_") else LayerRelationTerm)(cfg, teacher, student)
    raise TypeError(f"no term for {type(cfg).__name__}")


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
    logits, hidden, pooled, poolings = False, set(), set(), set()
    for term in terms:
        if isinstance(term, (KDTerm, LogitMSETerm, RWKDTerm)):
            logits = True
        elif isinstance(term, (HiddenTerm, WordRelationTerm, LayerRelationTerm)):
            hidden |= {t for t, _ in term.pairs}
        elif isinstance(term, PKDTerm):
            pooled |= {t for t, _ in term.pairs}
            poolings.add(term.pooling)
        elif isinstance(term, UniversalKDTerm):
            pooled |= set(term.teacher_layers)
            poolings.add(term.pooling)
        elif term.reads_teacher:
            return None, f"loss '{term.name}' reads attention maps or Q/K/V projections, which are not cached"
    if len(poolings) > 1:
        return None, ("pooled-state terms (pkd, universal_kd) pool differently (cls and mean); a cache stores one "
                      "pooling")
    if not (logits or hidden or pooled):
        return None, "no loss reads the teacher"
    if any(isinstance(t, LogitMSETerm) for t in terms) and num_classes > dense_max:
        return None, "logit_mse needs raw logits, which a top-k cache does not keep"
    dense = num_classes <= dense_max
    spec = SignalSpec(logits=("dense" if dense else "topk") if logits else None, top_k=top_k,
                      hidden_layers=tuple(sorted(hidden)), pooled_layers=tuple(sorted(pooled)),
                      pooling=poolings.pop() if poolings else "cls",
                      dtype="float32" if dense and not (hidden or pooled) else "float16")
    return spec, ""


class RWKDTerm(Term):
    """RW-KD (Lu et al. 2021): mean_i [(1 − λ_i)·CE_i + λ_i·T²·KL_i], λ_i learned on a held-out meta split.

    It reads the teacher's logits only, so a teacher cache serves it. Before training, :meth:`set_meta_data`
    hands it the meta set (carved from the training split by :func:`kdkit.api.distill`). In training, every
    ``meta_every``-th batch first runs a meta step (:mod:`kdkit.losses.reweighting`): a functional look-ahead of
    the student on this batch, scored by CE on the next meta batch; ``meta_net`` then takes one :class:`MetaAdam`
    step of the λ network on that meta-gradient, ``l2rw`` sets λ from it. The loss uses λ detached, so the
    student's gradient is that of the weighted loss. In evaluation (or without grad) there is no meta step.

    The meta network and its Adam state are buffers/parameters of this term with ``requires_grad`` False outside
    the meta step: the training optimiser never sees them, checkpoints hold them and resume continues them; a
    counter buffer fixes which meta batch comes next, so a resumed run reads the same meta batches. Meta batch k
    is slice k mod E of a permutation of the meta set seeded by (``data.seed`` + k div E), E = full batches per
    pass (the last incomplete one is dropped, so every meta batch has the same size). Under torch.distributed
    the meta network's gradients are averaged over processes before its step (only single-process is tested).
    """

    inputs = ("input_ids", "attention_mask")

    def __init__(self, cfg: RWKDLoss, student: nn.Module):
        super().__init__(cfg.name, cfg.weight)
        self.cfg = cfg
        self.meta_net = self.meta_adam = None
        if cfg.variant == "meta_net":
            self.meta_net = losses.LambdaNet(cfg.meta_hidden).requires_grad_(False)
            self.meta_adam = losses.MetaAdam(list(self.meta_net.parameters()), lr=cfg.meta_lr)
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))  # training batches seen (checkpointed)
        self._student = [student]  # a plain list: the DistillationModule owns (and saves) the student
        self._meta = None
        self._batches: int | None = None  # host copy of ``batches``, read once after a resume has loaded it
        self._window: torch.Tensor | None = None  # λ [sum, sum of squares, count, min, max] since the last log

    def set_meta_data(self, dataset, collator, *, batch_size: int, seed: int, learning_rate: float) -> None:
        """The meta set (tokenised examples), its collator, and the run's defaults for ``meta_batch_size``
        (the training batch size) and ``virtual_lr`` (the training learning rate)."""
        size = min(self.cfg.meta_batch_size or batch_size, len(dataset))
        if size < 1:
            raise ConfigError(f"loss '{self.name}': the meta set is empty; raise meta_fraction")
        self._meta = (dataset, collator, size)
        self.seed = seed
        self.virtual_lr = self.cfg.virtual_lr or learning_rate

    def _meta_batch(self, k: int, device: torch.device) -> dict:
        dataset, collator, size = self._meta
        per_pass = len(dataset) // size
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed + k // per_pass))
        rows = order[(k % per_pass) * size:(k % per_pass + 1) * size].tolist()
        return {key: value.to(device) for key, value in collator([dataset[i] for i in rows]).items()}

    def forward(self, student, teacher, batch):
        labels, t_logits = batch["labels"], teacher.logits.detach()
        ce, kd = losses.per_sample_ce_kd(student.logits, t_logits, labels, self.cfg.temperature, self.cfg.t2_scaling)
        features = losses.rwkd_features(ce, kd, t_logits, labels)
        if self.training and torch.is_grad_enabled():
            if self._batches is None:
                self._batches = int(self.batches)
            if self._batches % self.cfg.meta_every == 0:
                lam = self._meta_step(features, t_logits, batch, self._batches // self.cfg.meta_every)
            else:
                lam = self._lambda(features)
            self._batches += 1
            self.batches += 1
            self._record(lam)
        else:
            lam = self._lambda(features)
        return losses.reweighted_loss(ce, kd, lam.to(ce.dtype))

    def _lambda(self, features: torch.Tensor) -> torch.Tensor:
        if self.meta_net is None:  # l2rw between meta steps, and in evaluation: the unweighted mix
            return torch.full_like(features[:, 0], 0.5)
        with torch.no_grad():
            return self.meta_net(features.to(self.meta_net.out.weight.dtype))

    def _meta_step(self, features, t_logits, batch, k: int) -> torch.Tensor:
        if self._meta is None:
            raise ConfigError(f"loss '{self.name}': no meta set; call the term's set_meta_data(...) before training "
                              f"(kdkit.api.distill does)")
        student = self._student[0]
        labels = batch["labels"]
        meta = self._meta_batch(k, labels.device)
        params = {n: p for n, p in student.named_parameters() if p.requires_grad}
        train_inputs = {key: batch[key] for key in self.inputs}
        meta_inputs = {key: meta[key] for key in self.inputs}

        def ce_kd(logits):
            return losses.per_sample_ce_kd(logits, t_logits, labels, self.cfg.temperature, self.cfg.t2_scaling)

        look_ahead = (student, params, train_inputs, meta_inputs, meta["labels"], self.virtual_lr)
        if self.meta_net is None:
            grad_ce, grad_kd = losses.l2rw_gradients(ce_kd, len(labels), *look_ahead)
            return losses.l2rw_lambda(grad_ce, grad_kd)[0]
        weights = list(self.meta_net.parameters())
        self.meta_net.requires_grad_(True)
        try:
            _, grads = losses.meta_net_gradient(self.meta_net, features.to(weights[0].dtype), ce_kd, *look_ahead)
        finally:
            self.meta_net.requires_grad_(False)
        self.meta_adam.step(weights, _mean_over_processes(list(grads)))
        return self._lambda(features)

    def _record(self, lam: torch.Tensor) -> None:
        lam = lam.detach().double()
        stats = torch.stack([lam.sum(), lam.pow(2).sum(), lam.new_tensor(lam.numel()), lam.min(), lam.max()])
        if self._window is None:
            self._window = stats
        else:
            w = self._window
            self._window = torch.cat([w[:3] + stats[:3], torch.minimum(w[3:4], stats[3:4]),
                                      torch.maximum(w[4:], stats[4:])])

    def extra_logs(self) -> dict[str, float]:
        if self._window is None:
            return {}
        total, squares, count, low, high = self._window.tolist()
        self._window = None
        mean = total / count
        std = max(squares / count - mean * mean, 0.0) ** 0.5
        return {f"{self.name}_lambda_{k}": round(v, 6) for k, v in
                (("mean", mean), ("std", std), ("min", low), ("max", high))}


def _mean_over_processes(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Average gradients over the processes of an initialised torch.distributed group (a no-op otherwise)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for g in grads:
            dist.all_reduce(g)
            g /= dist.get_world_size()
    return grads
