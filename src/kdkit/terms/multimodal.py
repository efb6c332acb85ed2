"""MSD (Jin et al., Findings of EMNLP 2021): modality-specific distillation terms for the ``multimodal`` task."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from kdkit import losses
from kdkit.errors import ConfigError
from kdkit.schema import BatchSize, Count, LearningRate, Temperature
from kdkit.terms.base import CacheRequest, LossConfig, SetupContext, Term, own_losses_only, register

WEIGHTINGS = ("equal", "population", "instance", "learned")
# the multimodal models give class logits only: no hidden states or attention maps to compare
own_losses_only("multimodal", also=("ce", "kd", "soft_ce", "logit_mse"))


class MSDLoss(LossConfig):
    """Σ_m w_m(x)·T²·KL(σ(z_t^m/T) ‖ σ(z_s^m/T)) over the single-modality views (only modality m present; the
    task's masking rules remove the others). ``weighting``: ``equal`` (1/M), ``population`` (each modality's mean
    saliency over the training split, normalised), ``instance`` (the example's own saliencies, normalised),
    ``learned`` (softmax(W·s(x) + b), trained by a look-ahead meta step on ``meta_fraction`` of the training split,
    Adam at ``meta_lr``, virtual step ``virtual_lr`` (null = training.learning_rate), a meta batch of
    ``meta_batch_size`` (null = training.batch_size) every ``meta_every`` batches). It goes beside ``ce`` and
    ``kd``, which give MSD's CE and KD on the full input."""

    name: Literal["msd"]
    weighting: Literal[WEIGHTINGS] = "instance"
    temperature: Temperature = 1.0
    meta_fraction: float = Field(0.1, gt=0, lt=1)
    meta_lr: LearningRate = 1e-2
    virtual_lr: LearningRate | None = None
    meta_batch_size: BatchSize | None = None
    meta_every: Count = 1


def to_device(obj, device):
    """A batch (nested dicts of tensors) on ``device``."""
    if isinstance(obj, dict):
        return {key: to_device(value, device) for key, value in obj.items()}
    return obj.to(device) if isinstance(obj, torch.Tensor) else obj


@register("msd")
class MSDTerm(Term):
    """MSD's per-modality terms (:func:`kdkit.losses.msd_loss`), weighted as ``weighting`` says.

    Reads from the student's representations ``modules["views"]`` ``(M, B, C)`` (and, to learn weights,
    ``modules["view_inputs"]``, the batch and its masked form, which the student's forward turns into views), from
    the teacher's ``modules["views"]``, ``["saliency"]`` ``(B, M)`` and ``["population"]`` ``(M,)``: the
    multimodal task's forward and teacher signals provide them.
    The learned weighting's network and its Adam state are this term's, frozen outside the meta step (the training
    optimiser never sees them; checkpoints hold them, as RW-KD's). The mean weight of each modality over the
    logging window is logged as ``<name>_w<m>``.
    """

    config = MSDLoss
    tasks = ("multimodal",)

    def __init__(self, cfg: MSDLoss, teacher: nn.Module | None = None, student: nn.Module | None = None):
        super().__init__(cfg, teacher, student)
        modalities = len(getattr(student, "encoders", ()))
        if modalities < 2:
            raise ConfigError(f"loss '{cfg.name}' needs a student of two or more modalities; this one has "
                              f"{modalities}")
        self.weight_net = self.meta_adam = None
        if cfg.weighting == "learned":
            self.weight_net = losses.SaliencyWeightNet(modalities).requires_grad_(False)
            self.meta_adam = losses.MetaAdam(list(self.weight_net.parameters()), lr=cfg.meta_lr)
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))
        self._student = [student]  # a plain list: the DistillationModule owns (and saves) the student
        self._meta = None
        self._batches: int | None = None
        self._window: torch.Tensor | None = None  # sum of weights per modality, count

    def cache_request(self):
        return CacheRequest(logits=True)

    def setup(self, ctx: SetupContext) -> None:
        if self.cfg.weighting != "learned":
            return
        meta = ctx.carve(self.cfg.meta_fraction)
        size = min(self.cfg.meta_batch_size or ctx.batch_size, len(meta))
        self._meta = (meta, ctx.collator, size)
        self.seed = ctx.data_seed
        self.virtual_lr = self.cfg.virtual_lr or ctx.learning_rate

    def _meta_batch(self, k: int, device) -> dict:
        dataset, collator, size = self._meta
        per_pass = len(dataset) // size
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed + k // per_pass))
        rows = order[(k % per_pass) * size:(k % per_pass + 1) * size].tolist()
        return to_device(collator([dataset[i] for i in rows]), device)

    def weights(self, saliency: torch.Tensor, population: torch.Tensor | None) -> torch.Tensor:
        """``(B, M)`` weights of a batch (the learned network's without a meta step)."""
        if self.weight_net is None:
            return losses.saliency_weights(saliency, self.cfg.weighting, population)
        with torch.no_grad():
            return self.weight_net(saliency)

    def forward(self, student, teacher, batch):
        saliency = teacher.modules["saliency"]
        if self.weight_net is not None and self.training and torch.is_grad_enabled():
            if self._batches is None:
                self._batches = int(self.batches)
            if self._batches % self.cfg.meta_every == 0:
                self._meta_step(student, teacher, batch, self._batches // self.cfg.meta_every)
            self._batches += 1
            self.batches += 1
        w = self.weights(saliency, teacher.modules.get("population"))
        if self.training:
            stats = torch.cat([w.detach().double().sum(0), w.new_tensor([w.shape[0]], dtype=torch.double)])
            self._window = stats if self._window is None else self._window + stats
        return losses.msd_loss(student.modules["views"], teacher.modules["views"], w, self.cfg.temperature)

    def _meta_step(self, student, teacher, batch, k: int) -> None:
        if self._meta is None:
            raise ConfigError(f"loss '{self.name}': no meta set; call the term's setup(...) before training "
                              f"(kdkit distill does)")
        model = self._student[0]
        meta = self._meta_batch(k, batch["labels"].device)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}

        def call(theta, *args):
            buffers = {n: b.clone() for n, b in model.named_buffers()}  # BatchNorm statistics stay untouched
            return functional_call(model, {**theta, **buffers}, args=args)

        inputs, masked = student.modules["view_inputs"]
        count = student.modules["views"].shape[0]
        weights = list(self.weight_net.parameters())
        self.weight_net.requires_grad_(True)
        try:
            _, grads = losses.msd_meta_gradient(
                self.weight_net, teacher.modules["saliency"],
                lambda theta: call(theta, inputs, masked)[1:count + 1], params,
                teacher.modules["views"].detach(), lambda theta: call(theta, meta["student"]), meta["labels"],
                self.virtual_lr, self.cfg.temperature)
        finally:
            self.weight_net.requires_grad_(False)
        self.meta_adam.step(weights, list(grads))

    def extra_logs(self) -> dict[str, float]:
        if self._window is None:
            return {}
        *sums, count = self._window.tolist()
        self._window = None
        return {f"{self.name}_w{m}": round(total / count, 4) for m, total in enumerate(sums)}
