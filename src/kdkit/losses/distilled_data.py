"""Dataset distillation's meta-objective: train on a tiny synthetic set by unrolled steps, score on real data.

Soft-label dataset distillation (Sucholutsky & Schonlau, IJCNN 2021), built on dataset distillation (Wang, Zhu,
Torralba & Efros 2018). The synthetic set is ``n`` samples x̃ with label distributions ỹ, laid out as ``steps``
batches of ``n / steps`` samples, and one learning rate per inner step, η_t = softplus(ρ_t). From the
initialisation θ_0, the inner loop takes T = steps · epochs plain gradient steps, step t on batch t mod steps:

    θ_{t+1} = θ_t − η_t ∇_θ ℓ(f_θt(x̃_b), ỹ_b),    ℓ(z, ỹ) = −Σ_c ỹ_c log σ(z)_c  (soft-label cross-entropy)

and the outer loss is the plain cross-entropy of f_θT on a batch of real examples. Every inner gradient is kept in
the graph (``create_graph=True``, the model run by ``torch.func.functional_call``, so its own parameters are never
changed), so the outer loss differentiates to x̃, ỹ and ρ through all T steps. Hard labels (Wang et al.) are the
same with ỹ fixed one-hot.

Soft labels are kept on the probability simplex by :func:`project_to_simplex` after each outer update (the
Euclidean projection of Duchi et al., ICML 2008), so they stay distributions and can start exactly one-hot.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from kdkit.losses.smoothing import soft_target_cross_entropy


def softplus_inverse(value: float) -> float:
    """ρ with softplus(ρ) = ``value`` (> 0): log(exp(value) − 1)."""
    return float(torch.log(torch.expm1(torch.tensor(float(value), dtype=torch.float64))))


def unrolled_parameters(model: nn.Module, params: dict[str, Tensor], samples: Tensor, targets: Tensor,
                        learning_rates: Tensor, steps: int, *, create_graph: bool = True) -> dict[str, Tensor]:
    """θ_T after the inner loop (see the module docstring) from ``params`` = θ_0.

    Args:
        model: the learner; called as ``functional_call(model, params, (x,))`` and returning logits ``(b, C)``.
        params: θ_0 by name (every trainable parameter of ``model``).
        samples: x̃, ``(n, ...)``; ``n`` divisible by ``steps``.
        targets: ỹ, ``(n, C)`` rows that are distributions.
        learning_rates: η, ``(T,)`` with T a multiple of ``steps``; step t reads batch t mod ``steps``.
        create_graph: keep each inner gradient in the graph (needed to differentiate θ_T; off to only train).
    """
    n = samples.shape[0]
    if n % steps or learning_rates.shape[0] % steps:
        raise ValueError(f"{n} samples and {learning_rates.shape[0]} learning rates do not split into {steps} steps")
    size = n // steps
    names = list(params)
    for t in range(learning_rates.shape[0]):
        part = slice((t % steps) * size, (t % steps + 1) * size)
        logits = functional_call(model, params, (samples[part],))
        loss = soft_target_cross_entropy(logits, targets[part])
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph)
        params = {k: params[k] - learning_rates[t] * g for k, g in zip(names, grads)}
        if not create_graph:
            params = {k: v.detach().requires_grad_() for k, v in params.items()}
    return params


def distillation_loss(model: nn.Module, params: dict[str, Tensor], samples: Tensor, targets: Tensor,
                      learning_rates: Tensor, steps: int, real: Tensor, labels: Tensor) -> Tensor:
    """The outer loss: mean cross-entropy of f at θ_T (:func:`unrolled_parameters`) on real ``(real, labels)``,
    differentiable w.r.t. ``samples``, ``targets`` and ``learning_rates``."""
    final = unrolled_parameters(model, params, samples, targets, learning_rates, steps)
    return F.cross_entropy(functional_call(model, final, (real,)), labels)


def train_on_synthetic(model: nn.Module, samples: Tensor, targets: Tensor, learning_rates: Tensor, steps: int
                       ) -> nn.Module:
    """``model`` trained in place by the inner loop on the synthetic set (no graph kept): how a fresh model learns
    from a distilled set."""
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    with torch.enable_grad():
        final = unrolled_parameters(model, params, samples.detach(), targets.detach(), learning_rates.detach(), steps,
                                    create_graph=False)
    with torch.no_grad():
        for name, value in model.named_parameters():
            value.copy_(final[name])
    return model


def project_to_simplex(rows: Tensor) -> Tensor:
    """Each row's Euclidean projection onto the probability simplex {p ≥ 0, Σ p = 1} (Duchi et al. 2008)."""
    ordered, _ = torch.sort(rows, dim=-1, descending=True)
    cumulative = ordered.cumsum(-1) - 1
    index = torch.arange(1, rows.shape[-1] + 1, device=rows.device, dtype=rows.dtype)
    support = (ordered - cumulative / index > 0).sum(-1, keepdim=True)
    theta = cumulative.gather(-1, support - 1) / support.to(rows.dtype)
    return (rows - theta).clamp(min=0)


