"""Distillation losses: tensors in, tensors out.

Every loss takes ``reduction`` in {"mean", "sum", "none"} and, for sequences, a ``(B, L)`` padding mask; see
:func:`reduce_loss` for the convention. Softmax is always over the last axis.
"""

from kdkit.losses._reduce import reduce_loss
from kdkit.losses.attention import attention_kl, attention_score_mse, value_relation_kl
from kdkit.losses.hidden import Projection, hidden_cosine, hidden_mse, pkd_loss
from kdkit.losses.logits import cross_entropy, hinton_kd, kl_divergence, logit_mse, soft_cross_entropy

__all__ = [
    "Projection",
    "attention_kl",
    "attention_score_mse",
    "cross_entropy",
    "hidden_cosine",
    "hidden_mse",
    "hinton_kd",
    "kl_divergence",
    "logit_mse",
    "pkd_loss",
    "reduce_loss",
    "soft_cross_entropy",
    "value_relation_kl",
]
