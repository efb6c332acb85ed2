"""Masking, reduction and shape checks shared by every loss.

Each loss computes an unreduced value per sample, per token or per (query, key) pair and hands it to
:func:`reduce_loss`, so the reduction convention lives in one place:

- ``"mean"``: sum over valid positions / number of valid positions in the whole batch (per valid token for
  sequences, per sample for classification; never divided twice);
- ``"sum"``: sum over valid positions;
- ``"none"``: ``(B,)``, each sample's mean over its own valid positions (0 for a sample with none).

Invalid positions are replaced by zeros with ``torch.where`` rather than multiplied by a 0/1 mask, because
``-inf * 0`` and ``nan * 0`` are ``nan``.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from kdkit.errors import ConfigError, ModelError

REDUCTIONS = ("mean", "sum", "none")


def zero_invalid(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` with the positions where ``mask`` (broadcastable to ``x``) is 0/False set to 0."""
    return x if mask is None else torch.where(mask.bool(), x, x.new_zeros(()))


def pair_mask(mask: Tensor | None, batch_size: int, length: int, device: torch.device) -> Tensor:
    """``(B, L, L)`` bool mask of the (query, key) pairs whose two tokens are real.

    ``mask`` is ``(B, L)`` (1 = token, 0 = padding) or None (all valid).
    """
    if mask is None:
        return torch.ones(batch_size, length, length, dtype=torch.bool, device=device)
    mask = mask.bool()
    return mask[:, :, None] & mask[:, None, :]


def kl_last_axis(log_p_teacher: Tensor, log_p_student: Tensor, mask: Tensor | None = None) -> Tensor:
    """KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s) over the last axis, from log-probabilities.

    ``mask`` (broadcastable to the inputs) drops entries of the last axis, e.g. padded keys of an attention row.
    """
    terms = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True)
    return zero_invalid(terms, mask).sum(-1)


def check_same_shape(what: str, student: Tensor, teacher: Tensor, axes: tuple[int, ...] | None = None) -> None:
    """Raise :class:`ModelError` when the student and teacher tensors of loss ``what`` differ in shape (or, when
    ``axes`` is given, in the sizes of those axes only)."""

    def sizes(x: Tensor) -> tuple[int, ...]:
        return tuple(x.shape) if axes is None else tuple(x.shape[a] for a in axes)

    if sizes(student) != sizes(teacher):
        where = "" if axes is None else f" in axes {axes}"
        raise ModelError(
            f"{what}: student shape {tuple(student.shape)} does not match teacher shape {tuple(teacher.shape)}{where}"
        )


def reduce_loss(values: Tensor, mask: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Reduce unreduced loss values by the convention in this module's docstring.

    Args:
        values: ``(B,)`` per sample, ``(B, L)`` per token, or any ``(B, ...)`` (e.g. ``(B, L, L)`` per pair).
        mask: same shape as ``values`` (or broadcastable to it), 1 = counts, 0 = padding; None = all valid.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar for ``"mean"``/``"sum"``, ``(B,)`` for ``"none"``.
    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}")
    valid = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool().expand_as(values)
    values = zero_invalid(values, valid)
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        return values.sum() / valid.sum().clamp(min=1)
    batch = values.shape[0]
    return values.reshape(batch, -1).sum(1) / valid.reshape(batch, -1).sum(1).clamp(min=1)
