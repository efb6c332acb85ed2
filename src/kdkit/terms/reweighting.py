"""RW-KD (Lu et al. 2021): per-sample weights between CE and KD, learned by a meta network on a held-out split."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from kdkit import losses
from kdkit.errors import ConfigError
from kdkit.schema import BatchSize, Count, LearningRate, Temperature
from kdkit.terms.base import CacheRequest, LossConfig, SetupContext, Term, register


class RWKDLoss(LossConfig):
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
    temperature: Temperature = 2.0
    t2_scaling: bool = True
    variant: Literal["meta_net", "l2rw"] = "meta_net"
    meta_lr: LearningRate = 1e-3
    meta_hidden: int = Field(16, gt=0, le=2**16)
    virtual_lr: LearningRate | None = None
    meta_fraction: float = Field(0.1, gt=0, lt=1)
    meta_batch_size: BatchSize | None = None
    meta_every: Count = 1


@register("rwkd")
class RWKDTerm(Term):
    """RW-KD (Lu et al. 2021): mean_i [(1 − λ_i)·CE_i + λ_i·T²·KL_i], λ_i learned on a held-out meta split.

    It reads the teacher's logits only, so a teacher cache serves it. Before training, :meth:`set_meta_data`
    carves the meta set out of the training split (:meth:`setup`). In training, every
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

    config = RWKDLoss
    unlabeled_rows = False  # its features and meta split read every row's gold label
    tasks = ("classification",)
    inputs = ("input_ids", "attention_mask")

    def __init__(self, cfg: RWKDLoss, teacher: nn.Module | None = None, student: nn.Module | None = None):
        super().__init__(cfg, teacher, student)
        self.meta_net = self.meta_adam = None
        if cfg.variant == "meta_net":
            self.meta_net = losses.LambdaNet(cfg.meta_hidden).requires_grad_(False)
            self.meta_adam = losses.MetaAdam(list(self.meta_net.parameters()), lr=cfg.meta_lr)
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))  # training batches seen (checkpointed)
        self._student = [student]  # a plain list: the DistillationModule owns (and saves) the student
        self._meta = None
        self._batches: int | None = None  # host copy of ``batches``, read once after a resume has loaded it
        self._window: torch.Tensor | None = None  # λ [sum, sum of squares, count, min, max] since the last log

    def setup(self, ctx: SetupContext) -> None:
        """Carve the meta set (``meta_fraction`` of the training split, seeded by ``data.seed``) out of training."""
        self.set_meta_data(ctx.carve(self.cfg.meta_fraction), ctx.collator, batch_size=ctx.batch_size,
                           seed=ctx.data_seed, learning_rate=ctx.learning_rate)

    def cache_request(self):
        return CacheRequest(logits=True)

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
            raise ConfigError(f"loss '{self.name}': no meta set; call the term's setup(...) before training "
                              f"(kdkit distill does)")
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
