"""Losses on hidden states and pooled vectors: MSE (TinyBERT), cosine (DistilBERT), PKD.

Hidden states are ``(B, L, D)`` with ``mask`` ``(B, L)`` (1 = real token), or pooled ``(B, D)`` with no mask.
Reductions follow :func:`kdkit.losses.reduce_loss`. Student and teacher widths must be equal: map the student
through a :class:`Projection` first when they differ.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from kdkit.losses._reduce import check_same_shape, reduce_loss


class Projection(nn.Linear):
    """Learned map from student width to teacher width, ``H_s W + b`` (the ``W_h``/``W_e`` of TinyBERT,
    Jiao et al. 2020).

    A distinct class so that trainers can tell distillation parameters from the student's own: they are
    optimised and checkpointed with the student, never exported with it.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim)


def hidden_mse(
    student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Hidden-state MSE of TinyBERT (Jiao et al. 2020): ``mean_d (h_s − h_t)²`` per token.

    Use on embeddings (layer 0) and mapped layers, with ``h_s`` already projected (``H_s W_h``).

    Args:
        student_hidden, teacher_hidden: ``(B, L, D)`` (or ``(B, D)``), same shape.
        mask: ``(B, L)`` or None.
    """
    check_same_shape("hidden_mse", student_hidden, teacher_hidden)
    return reduce_loss((student_hidden - teacher_hidden).pow(2).mean(-1), mask, reduction)


def hidden_cosine(
    student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Cosine embedding loss of DistilBERT (Sanh et al. 2019): ``1 − cos(h_s, h_t)`` over ``D`` per token.

    Args:
        student_hidden, teacher_hidden: ``(B, L, D)`` or ``(B, D)``, same shape.
        mask: ``(B, L)`` or None.
    """
    check_same_shape("hidden_cosine", student_hidden, teacher_hidden)
    return reduce_loss(1.0 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1), mask, reduction)


def pkd_loss(student_vectors: Tensor, teacher_vectors: Tensor, reduction: str = "mean") -> Tensor:
    """Patient-KD loss of Sun et al. (2019): ``‖h_s/‖h_s‖₂ − h_t/‖h_t‖₂‖₂²`` on [CLS] vectors of mapped layers.

    Squared distance summed over ``D``, then averaged over the ``P`` layer pairs. The paper sums over pairs; the
    mean keeps the weight β comparable across student depths (multiply by ``P`` for the paper's value).

    Args:
        student_vectors, teacher_vectors: ``(B, D)`` or ``(B, P, D)``, same shape.

    Returns:
        Per-sample values (mean over pairs) reduced over ``B``: scalar for ``"mean"``/``"sum"``, ``(B,)`` for
        ``"none"``.
    """
    check_same_shape("pkd_loss", student_vectors, teacher_vectors)
    diff = F.normalize(student_vectors, dim=-1) - F.normalize(teacher_vectors, dim=-1)
    per_sample = diff.pow(2).sum(-1).reshape(diff.shape[0], -1).mean(-1)
    return reduce_loss(per_sample, None, reduction)
