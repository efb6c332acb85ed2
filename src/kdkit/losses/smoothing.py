"""Teacher-free regularisers of the output distribution: label smoothing, confidence penalty, Beta smoothing.

Zhang & Sabuncu (NeurIPS 2020), "Self-Distillation as Instance-Specific Label Smoothing", read self-distillation
as a prior on the predictive distribution and compare it with two baselines:

- label smoothing (Szegedy et al. 2016): targets with ``1 − ε`` on the true class and ``ε/(C−1)`` on each other;
- the confidence penalty (Pereyra et al. 2017): ``CE − β·H(σ(z))``;

and propose **Beta smoothing**, an instance-specific label smoothing without a teacher: per batch, draw
``b ~ Beta(a, 1)``, sort, and give the sample on which an EMA copy of the model is most confident the largest
``b``; its target puts ``b_i`` on the true class and ``(1 − b_i)/(C−1)`` on each other class.

Logits are ``(B, C)`` or ``(B, L, V)``; softmax is over the last axis. Reductions follow
:func:`kdkit.losses.reduce_loss` (per sample for ``(B, C)``, per valid token for ``(B, L, V)``).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from kdkit.errors import ConfigError, ModelError
from kdkit.losses._reduce import check_same_shape, reduce_loss
from kdkit.losses.logits import IGNORE_INDEX


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes {num_classes} must be at least 2 to spread mass over the other classes")


def _smoothed_one_hot(labels: Tensor, true_mass: Tensor, num_classes: int) -> Tensor:
    """``true_mass`` (float, shaped like ``labels``) on the true class, the rest spread evenly over the others.

    Positions whose label is ``IGNORE_INDEX`` get an all-zero row, so a soft cross-entropy there is 0.
    """
    valid = labels != IGNORE_INDEX
    one_hot = F.one_hot(labels.clamp(min=0), num_classes).to(true_mass.dtype)
    true_mass = true_mass.unsqueeze(-1)
    targets = one_hot * true_mass + (1 - one_hot) * (1 - true_mass) / (num_classes - 1)
    return torch.where(valid.unsqueeze(-1), targets, targets.new_zeros(()))


def label_smoothing_targets(labels: Tensor, num_classes: int, epsilon: float = 0.1) -> Tensor:
    """Label-smoothing targets (Szegedy et al. 2016, as specified by Zhang & Sabuncu 2020):
    ``1 − ε`` on the true class, ``ε/(C−1)`` on every other class.

    (PyTorch's ``label_smoothing`` instead spreads ``ε`` over all ``C`` classes, the true one included.)

    Args:
        labels: ``(B,)`` or ``(B, L)`` class ids; ``-100`` positions get an all-zero row.
        num_classes: ``C`` ≥ 2.
        epsilon: smoothing mass in ``[0, 1)``.

    Returns:
        ``(*labels.shape, C)`` float targets; each valid row sums to 1.
    """
    _check_num_classes(num_classes)
    if not 0.0 <= epsilon < 1.0:
        raise ConfigError(f"epsilon {epsilon} must be in [0, 1)")
    mass = torch.full(labels.shape, 1.0 - epsilon, device=labels.device)
    return _smoothed_one_hot(labels, mass, num_classes)


def soft_target_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor | None = None,
                              reduction: str = "mean") -> Tensor:
    """Cross-entropy to a given target distribution: ``−Σ_c t_c log σ(z)_c`` over the last axis.

    Args:
        logits: ``(B, C)`` or ``(B, L, V)``.
        targets: same shape, rows summing to 1 (an all-zero row contributes 0).
        mask: ``(B, L)`` valid tokens for sequences (or ``(B,)`` samples), or None.

    Returns:
        Scalar for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"``.
    """
    check_same_shape("soft_target_cross_entropy", logits, targets)
    values = -(targets * F.log_softmax(logits, dim=-1)).sum(-1)
    return reduce_loss(values, mask, reduction)


def confidence_penalty(logits: Tensor, labels: Tensor, beta: float = 0.1, ignore_index: int = IGNORE_INDEX,
                       reduction: str = "mean") -> Tensor:
    """Confidence penalty of Pereyra et al. (2017), a baseline in Zhang & Sabuncu (2020):
    ``CE(y, σ(z)) − β·H(σ(z))`` with ``H(p) = −Σ_c p_c log p_c``.

    Subtracting the entropy rewards less peaked predictions; ``β = 0`` is plain CE.

    Args:
        logits: ``(B, C)`` or ``(B, L, V)``.
        labels: ``(B,)`` or ``(B, L)`` class ids; positions equal to ``ignore_index`` do not count.
        beta: entropy weight, ≥ 0.

    Returns:
        Scalar for ``"mean"``/``"sum"``; ``(B,)`` for ``"none"``.
    """
    if beta < 0:
        raise ConfigError(f"beta {beta} must be >= 0")
    valid = labels != ignore_index
    log_p = F.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return reduce_loss(nll - beta * entropy, valid, reduction)


def beta_smoothing_targets(confidences: Tensor, labels: Tensor, num_classes: int, a: float = 3.0,
                           generator: torch.Generator | None = None) -> Tensor:
    """Instance-specific smoothed targets of Beta smoothing (Zhang & Sabuncu 2020, Sec. 5).

    Draw ``b_1..b_B ~ Beta(a, 1)`` for the batch, sort them, and hand them out by the rank of each sample's
    true-class confidence ``c_i`` (from an EMA copy of the model): the most confident sample gets the largest
    ``b``, the least confident the smallest. This follows the paper's reading of self-distillation, where a
    teacher is most confident, and so smooths least, on the examples it finds easy; harder examples get more
    smoothing. Target: ``t_i = b_i·onehot(y_i) + (1 − b_i)/(C−1)`` on each other class.

    ``Beta(a, 1)`` has CDF ``x^a``, so ``b = u^{1/a}`` with ``u ~ U(0, 1)`` (inverse-CDF sampling, which takes a
    ``torch.Generator``); its mean is ``a/(a+1)`` (0.75 for the paper's ``a = 3``). Ties in ``c`` keep batch order.

    Args:
        confidences: ``(B,)`` true-class probabilities (only their ranks matter).
        labels: ``(B,)`` class ids.
        num_classes: ``C`` ≥ 2.
        a: Beta shape parameter, > 0.
        generator: optional ``torch.Generator`` on the labels' device, for reproducible draws.

    Returns:
        ``(B, C)`` float targets, rows summing to 1.
    """
    _check_num_classes(num_classes)
    if not a > 0:
        raise ConfigError(f"a {a} must be > 0")
    if confidences.dim() != 1 or confidences.shape != labels.shape:
        raise ModelError(f"beta_smoothing_targets: confidences {tuple(confidences.shape)} and labels "
                         f"{tuple(labels.shape)} must both be (B,)")
    u = torch.rand(labels.shape, generator=generator, device=labels.device)
    b_sorted = u.pow(1.0 / a).sort().values
    order = confidences.argsort(stable=True)  # order[k] is the sample of rank k (least confident first)
    b = torch.empty_like(b_sorted)
    b[order] = b_sorted
    return _smoothed_one_hot(labels, b, num_classes)
