"""Universal-KD (Wu et al. 2021): per-layer linear probes, the teacher's fitted first on the frozen teacher.

Stage one (:meth:`UniversalKDTerm.setup`): the teacher runs once over the training split (no gradients), the pooled
state of every block is kept in memory, and one linear probe per layer is fitted to the gold labels by
cross-entropy with a few epochs of Adam. Fitted probes are kept in the artifact store (kind ``probes``), keyed by
the teacher's weights, the training examples and the fitting settings, so a rerun or a resume reads them back.
Stage two (training): each student layer's probe logits are matched by KL to an attention mixture of the teacher
layers' probe logits (:func:`kdkit.losses.universal_kd`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader

from kdkit import losses
from kdkit.capture import Capture, Representations, hidden_size, num_layers
from kdkit.errors import ConfigError
from kdkit.losses.universal import ProbeSet
from kdkit.schema import LearningRate, Temperature
from kdkit.signals.cache import fingerprint_model
from kdkit.signals.live import LiveTeacher, teacher_inputs
from kdkit.store import ArtifactStore, digest
from kdkit.terms.base import CacheRequest, LossConfig, Needs, SetupContext, Term, register


class UniversalKDLoss(LossConfig):
    """Universal-KD (Wu et al. 2021): per-layer probe logits, student layer i matched to an attention mixture of the
    teacher layers' probe logits. Teacher probes are fitted first on the frozen teacher (``probe_epochs`` of Adam at
    ``probe_lr`` over its pooled states, stored); student probes are trained with the student. ``attention_grad``
    lets gradients reach the student probes through the attention weights too, as in the formula.
    ``student_modules`` names submodules whose outputs are the student's layers (for students that are not
    transformers, e.g. the LSTM layers of a BiLSTM); by default its blocks' hidden states 1..N are used."""

    name: Literal["universal_kd"]
    temperature: Temperature = 1.0
    t2_scaling: bool = False
    pooling: Literal["cls", "mean"] = "cls"
    probe_epochs: int = Field(3, gt=0, le=10**4)
    probe_lr: LearningRate = 1e-3
    attention_grad: bool = True
    student_modules: list[str] | None = Field(None, max_length=256)


def pool(states: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """Pool ``(B, L, D)`` states like :meth:`Representations.pooled` (``(B, D)`` states are returned as they are)."""
    if states.dim() == 2:
        return states
    return Representations(hidden_states=(states,), attention_mask=mask).pooled(0, how)


@torch.no_grad()
def teacher_pooled_states(teacher: nn.Module, dataset, collator, layers: list[int], pooling: str, *,
                          device: str = "cpu", batch_size: int = 64) -> tuple[list[Tensor], Tensor]:
    """The teacher's pooled states of ``layers`` over ``dataset`` (one ``(N, D)`` float32 tensor per layer, on the
    CPU) and the gold labels ``(N,)``."""
    live = LiveTeacher(teacher, hidden_states=True).to(device)
    states: list[list[Tensor]] = [[] for _ in layers]
    labels = []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        batch = {k: v.to(device) for k, v in batch.items()}
        reps = live(batch)
        for store, layer in zip(states, layers):
            store.append(reps.pooled(layer, pooling).float().cpu())
        labels.append(batch["labels"].cpu())
    return [torch.cat(s) for s in states], torch.cat(labels)


def fit_probes(probes: ProbeSet, states: list[Tensor], labels: Tensor, *, epochs: int, lr: float,
               batch_size: int = 32, seed: int = 0) -> float:
    """Fit every probe to the labels by CE (summed over layers: the probes share no parameters, so each gets
    its own gradient); returns the last epoch's mean CE per layer."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(probes.parameters(), lr=lr)
    probes.train()
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            logits = probes([s[rows] for s in states])  # (b, n, C)
            loss = F.cross_entropy(logits.flatten(0, 1), labels[rows].repeat_interleave(logits.shape[1]))
            optimizer.zero_grad()
            (loss * logits.shape[1]).backward()
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        last = total / count
    return last


def _examples_digest(dataset) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for example in dataset:
        inputs = teacher_inputs(example)
        hasher.update(json.dumps([inputs["input_ids"], example.get("labels")]).encode())
    return hasher.hexdigest()


def train_teacher_probes(teacher: nn.Module, dataset, collator, layers: list[int], num_classes: int, *,
                         pooling: str, epochs: int, lr: float, device: str = "cpu", batch_size: int = 64,
                         seed: int = 0, store: ArtifactStore | None = None) -> ProbeSet:
    """Probes for the teacher's ``layers`` fitted on ``dataset``, read from the artifact store (default: the kdkit
    cache directory) when the same teacher, data and settings fitted them before."""
    store = store or ArtifactStore()
    key = digest({"teacher": fingerprint_model(teacher), "examples": _examples_digest(dataset), "layers": layers,
                  "pooling": pooling, "epochs": epochs, "lr": lr, "seed": seed, "classes": num_classes})
    found = store.get("probes", key)
    if found is not None:
        weights = load_file(found / "probes.safetensors")
        dims = [weights[f"probes.{i}.weight"].shape[1] for i in range(len(layers))]
        probes = ProbeSet(dims, num_classes)
        probes.load_state_dict(weights)
        return probes.requires_grad_(False).eval()
    states, labels = teacher_pooled_states(teacher, dataset, collator, layers, pooling, device=device,
                                           batch_size=batch_size)
    torch.manual_seed(seed)  # the probes' initialisation, so a refit gives the same probes
    probes = ProbeSet([s.shape[1] for s in states], num_classes)
    ce = fit_probes(probes, states, labels, epochs=epochs, lr=lr, seed=seed)
    print(f"[kdkit] fitted {len(layers)} teacher probes ({pooling} pooling, {epochs} epochs): mean CE {ce:.4f}")
    weights = {k: v.contiguous() for k, v in probes.state_dict().items()}
    store.put("probes", key, lambda folder: save_file(weights, folder / "probes.safetensors"),
              meta={"layers": layers, "pooling": pooling, "mean_ce": ce})
    return probes.requires_grad_(False).eval()


@register("universal_kd")
class UniversalKDTerm(Term):
    """Universal-KD (Wu et al. 2021): per-layer probe logits matched through attention over the teacher layers.

    Layers are block outputs: hidden states 1..N of each model (the embedding output has no probe), or, with
    ``student_modules``, the outputs of those hooked submodules (a BiLSTM's LSTM layers), pooled by the term's
    ``pooling``. The teacher probes are fitted by :meth:`setup` before distillation and stay frozen (saved in
    checkpoints, never optimised); the student probes are trained with the student. Neither is exported.
    """

    config = UniversalKDLoss
    unlabeled_rows = False  # its probes are fitted to every row's gold label
    tasks = ("classification",)

    def __init__(self, cfg: UniversalKDLoss, teacher: nn.Module, student: nn.Module):
        super().__init__(cfg, teacher, student)
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

    def setup(self, ctx: SetupContext) -> None:
        """Fit (or read back) the teacher probes on the frozen teacher over the training split."""
        fitted = train_teacher_probes(ctx.teacher, ctx.train, ctx.collator, self.teacher_layers, self.num_classes,
                                      pooling=self.pooling, epochs=self.cfg.probe_epochs, lr=self.cfg.probe_lr,
                                      device=ctx.device)
        self.teacher_probes.load_state_dict(fitted.state_dict())
        self.prepared = True

    def cache_request(self):
        return CacheRequest(pooled=frozenset(self.teacher_layers), pooling=self.pooling)

    def student_pooled(self, student: Representations) -> list[torch.Tensor]:
        if self.student_modules:
            return [pool(student.modules[n], student.attention_mask, self.pooling) for n in self.student_modules]
        return [student.pooled(layer, self.pooling) for layer in range(1, len(self.student_probes.probes) + 1)]

    def forward(self, student, teacher, batch):
        if not self.prepared:
            raise ConfigError("loss 'universal_kd': the teacher probes are not fitted; call the term's setup("
                              "SetupContext(teacher, train_dataset, collator)) before training (kdkit distill does)")
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
    for name in names:
        if not isinstance(captured[name], Tensor) or captured[name].dim() < 2:
            raise ConfigError(f"loss 'universal_kd' student_modules: '{name}' outputs a "
                              f"{type(captured[name]).__name__}, not a tensor of vectors; name a layer whose output "
                              f"is (batch, tokens, width) or (batch, width)")
    return [captured[n].shape[-1] for n in names]
