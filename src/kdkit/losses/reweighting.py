"""RW-KD: sample-wise re-weighting of the hard-label and distillation terms (Lu et al., Findings EMNLP 2021).

Each training sample i mixes its own cross-entropy and KD loss with a weight λ_i ∈ [0, 1]::

    L = mean_i [ (1 − λ_i) · CE_i + λ_i · KD_i ],   CE_i = −log σ(z_s)_y,   KD_i = T²·KL(σ(z_t/T) ‖ σ(z_s/T))

λ is learned by meta-learning on a held-out *meta* split of the training data (never the evaluation data):

- ``meta_net`` (the variant RW-KD builds): λ_i = :class:`LambdaNet` (features_i). Per batch, one *virtual* SGD
  step of the student θ' = θ − η·∇_θ L(θ, λ) is taken functionally with ``create_graph=True``, the student with
  θ' is scored by its mean CE on a meta batch, and the gradient of that meta loss w.r.t. the meta network's
  parameters (:func:`lookahead_meta_loss`) trains the meta network.
- ``l2rw`` (learning to reweight, Ren et al. 2018): perturbation weights ε_ce, ε_kd (B,) start at 0 in
  L_ε = mean_i (ε_ce,i·CE_i + ε_kd,i·KD_i); the same look-ahead gives ∂meta/∂ε, and :func:`l2rw_lambda` turns
  the clamped negative meta-gradient into λ_i.

No official code exists; every choice is documented where it is made and in ``docs/rwkd.md``. Shapes: logits
``(B, C)`` (or ``(B, L, V)`` with per-sample means over labelled tokens), labels ``(B,)`` (``(B, L)``).
This module is tensors and torch only: the student is an ``nn.Module`` called through ``torch.func``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from kdkit.errors import ConfigError
from kdkit.losses._reduce import reduce_loss
from kdkit.losses.logits import IGNORE_INDEX, cross_entropy, kl_divergence

NUM_FEATURES = 4


def per_sample_ce_kd(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float = 2.0,
                     t2_scaling: bool = True) -> tuple[Tensor, Tensor]:
    """Per-sample ``CE_i`` and ``KD_i = T²·KL(σ(z_t/T) ‖ σ(z_s/T))`` (both ``(B,)``), over the same labelled
    positions (labels of -100 never count), so that they mix linearly per sample."""
    ce = cross_entropy(student_logits, labels, reduction="none")
    kd = kl_divergence(student_logits, teacher_logits, temperature, mask=labels != IGNORE_INDEX,
                       t2_scaling=t2_scaling, reduction="none")
    return ce, kd


def reweighted_loss(ce: Tensor, kd: Tensor, lam: Tensor) -> Tensor:
    """``mean_i [(1 − λ_i)·CE_i + λ_i·KD_i]`` from ``(B,)`` per-sample losses and weights λ ∈ [0, 1]."""
    return ((1 - lam) * ce + lam * kd).mean()


def rwkd_features(ce: Tensor, kd: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """The meta network's input, ``(B, 4)``, detached: ``[log(1+CE_i), log(1+KD_i), conf_i, p_t,i(y_i)]``.

    ``conf_i`` is the teacher's confidence max_c σ(z_t)_c and ``p_t,i(y_i)`` its probability of the true label,
    both at T = 1 (the teacher's own belief, independent of the distillation temperature). The two losses enter
    as log(1 + x) so that a few very large losses do not saturate the sigmoid; the probabilities are in [0, 1]
    already. For sequences each feature is the mean over the sample's labelled tokens.
    """
    valid = labels != IGNORE_INDEX
    probs = teacher_logits.detach().float().softmax(-1)
    confidence = reduce_loss(probs.max(-1).values, valid, "none")
    true_prob = probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    true_prob = reduce_loss(true_prob, valid, "none")
    features = torch.stack([ce.detach().float().log1p(), kd.detach().float().clamp(min=0).log1p(), confidence,
                            true_prob], dim=-1)
    return features.to(ce.dtype)


class LambdaNet(nn.Module):
    """The RW-KD meta network: λ_i = sigmoid(W₂ tanh(W₁ f_i + b₁) + b₂), f_i from :func:`rwkd_features`.

    tanh keeps λ smooth in the features (and the meta-gradient well defined everywhere). The output layer is
    initialised to zero, so training starts from λ_i = 0.5 for every sample (an equal mix of CE and KD, the
    usual fixed-α default) and the first meta steps move it from there; the hidden layer keeps PyTorch's default
    initialisation so the features are not all mapped alike once the output layer moves.
    """

    def __init__(self, hidden: int = 16, num_features: int = NUM_FEATURES):
        super().__init__()
        self.hidden = nn.Linear(num_features, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: Tensor) -> Tensor:
        """``(B, num_features)`` → λ ``(B,)`` in [0, 1]."""
        return torch.sigmoid(self.out(torch.tanh(self.hidden(features)))).squeeze(-1)


def _logits(output) -> Tensor:
    return output if isinstance(output, Tensor) else output.logits


def lookahead_meta_loss(student: nn.Module, params: dict[str, Tensor], train_inputs: dict[str, Tensor],
                        train_loss: Callable[[Tensor], Tensor], meta_inputs: dict[str, Tensor], meta_labels: Tensor,
                        virtual_lr: float) -> Tensor:
    """The one-step look-ahead meta loss of learning-to-reweight, differentiable w.r.t. whatever ``train_loss``
    depends on besides the logits (the meta network's λ, or L2RW's ε).

    θ' = θ − η·∇_θ train_loss(f(x_train; θ)) with the gradient kept in the graph (``create_graph=True``), then
    ``meta = mean CE(f(x_meta; θ'), y_meta)``. The student is run by ``torch.func.functional_call``, so its own
    parameters are never changed and no ``.grad`` is written.

    Args:
        student: the student module (returning logits, or an output with ``.logits``).
        params: the student's trainable parameters θ by name (tensors that require grad); parameters left out
            (frozen ones) keep their module values and no virtual step.
        train_inputs, meta_inputs: keyword inputs of the student for the training and the meta batch.
        train_loss: logits of the training batch at θ ↦ scalar L(θ, λ).
        meta_labels: labels of the meta batch, ``(B_meta,)`` (or ``(B_meta, L)``, -100 ignored).
        virtual_lr: η, the step size of the virtual SGD step.
    """
    names = list(params)
    loss = train_loss(_logits(functional_call(student, params, args=(), kwargs=train_inputs)))
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
    updated = {n: params[n] if g is None else params[n] - virtual_lr * g for n, g in zip(names, grads)}
    meta_logits = _logits(functional_call(student, updated, args=(), kwargs=meta_inputs))
    return cross_entropy(meta_logits, meta_labels)


def meta_net_gradient(meta_net: nn.Module, features: Tensor, ce_kd: Callable[[Tensor], tuple[Tensor, Tensor]],
                      student: nn.Module, params: dict[str, Tensor], train_inputs: dict[str, Tensor],
                      meta_inputs: dict[str, Tensor], meta_labels: Tensor, virtual_lr: float
                      ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """RW-KD's meta step: the look-ahead meta loss with λ = ``meta_net(features)`` (not detached) and its gradient
    w.r.t. the meta network's parameters (which must require grad).

    ``ce_kd`` maps the training batch's logits to its per-sample ``(CE, KD)``, e.g. :func:`per_sample_ce_kd` with
    the teacher logits and labels bound. Returns ``(meta_loss, grads)``, grads in ``meta_net.parameters()`` order.
    """
    lam = meta_net(features)
    meta = lookahead_meta_loss(student, params, train_inputs, lambda logits: reweighted_loss(*ce_kd(logits), lam),
                               meta_inputs, meta_labels, virtual_lr)
    return meta.detach(), torch.autograd.grad(meta, list(meta_net.parameters()))


def l2rw_gradients(ce_kd: Callable[[Tensor], tuple[Tensor, Tensor]], batch_size: int, student: nn.Module,
                   params: dict[str, Tensor], train_inputs: dict[str, Tensor], meta_inputs: dict[str, Tensor],
                   meta_labels: Tensor, virtual_lr: float) -> tuple[Tensor, Tensor]:
    """Ren et al. (2018)'s meta-gradient w.r.t. per-sample perturbation weights ε_ce, ε_kd ``(B,)`` at ε = 0 of
    L_ε = mean_i (ε_ce,i·CE_i + ε_kd,i·KD_i). Returns ``(∂meta/∂ε_ce, ∂meta/∂ε_kd)``, each ``(B,)``."""
    like = next(iter(params.values()))
    eps = torch.zeros(2, batch_size, device=like.device, dtype=like.dtype, requires_grad=True)

    def perturbed(logits: Tensor) -> Tensor:
        ce, kd = ce_kd(logits)
        return (eps[0].to(ce.dtype) * ce + eps[1].to(kd.dtype) * kd).mean()

    meta = lookahead_meta_loss(student, params, train_inputs, perturbed, meta_inputs, meta_labels, virtual_lr)
    grad_ce, grad_kd = torch.autograd.grad(meta, eps)[0]
    return grad_ce, grad_kd


def l2rw_lambda(grad_ce: Tensor, grad_kd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """L2RW weights from the meta-gradients of ε_ce, ε_kd ``(B,)``, and the λ they imply.

    w = max(−∂meta/∂ε, 0): a term whose up-weighting would lower the meta loss gets weight, a harmful one none.
    The 2B weights are normalised jointly to sum to 1 (all zero → uniform 1/(2B)), as Ren et al. normalise over
    the batch. RW-KD keeps every sample in its loss and learns only the mix, so λ_i = w_kd,i / (w_ce,i + w_kd,i),
    0.5 where both are 0 (no evidence either way); the normalisation does not change λ.

    Returns ``(λ, w_ce, w_kd)``, each ``(B,)``.
    """
    w = torch.stack([-grad_ce, -grad_kd]).clamp(min=0)
    total = w.sum()
    w = torch.where(total > 0, w / total.clamp(min=torch.finfo(w.dtype).tiny), torch.full_like(w, 1 / w.numel()))
    pair = w[0] + w[1]
    lam = torch.where(pair > 0, w[1] / pair.clamp(min=torch.finfo(w.dtype).tiny), torch.full_like(pair, 0.5))
    return lam, w[0], w[1]


class MetaAdam(nn.Module):
    """Adam (Kingma & Ba 2015; β = (0.9, 0.999), ε = 1e-8, no weight decay) for a meta-learner's parameters, its
    moments and step count held as buffers.

    Buffers are in the owner's ``state_dict``, so a checkpoint holds the meta optimiser's state beside the meta
    network and a resumed run continues it exactly; it also keeps the meta parameters away from the training
    optimiser, which only sees parameters that require grad.
    """

    def __init__(self, params: list[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__()
        if not lr > 0:
            raise ConfigError(f"meta learning rate {lr} must be > 0")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        for i, p in enumerate(params):
            self.register_buffer(f"exp_avg_{i}", torch.zeros_like(p))
            self.register_buffer(f"exp_avg_sq_{i}", torch.zeros_like(p))
        self.count = len(params)

    @torch.no_grad()
    def step(self, params: list[Tensor], grads: list[Tensor]) -> None:
        """One Adam update of ``params`` in place from ``grads`` (same order as at construction)."""
        if len(params) != self.count:
            raise ValueError(f"MetaAdam holds state for {self.count} parameters, got {len(params)}")
        self.steps += 1
        beta1, beta2 = self.betas
        t = self.steps.float()
        correction1, correction2 = 1 - beta1**t, 1 - beta2**t
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v = getattr(self, f"exp_avg_{i}"), getattr(self, f"exp_avg_sq_{i}")
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denominator = (v / correction2.to(v.dtype)).sqrt_().add_(self.eps)
            p.addcdiv_(m / correction1.to(m.dtype), denominator, value=-self.lr)
