"""Distillation losses: tensors in, tensors out.

Every loss takes ``reduction`` in {"mean", "sum", "none"} and, for sequences, a ``(B, L)`` padding mask; see
:func:`reduce_loss` for the convention. Softmax is always over the last axis.
"""

from kdkit.losses._reduce import reduce_loss
from kdkit.losses.attention import attention_kl, attention_score_mse, value_relation_kl
from kdkit.losses.hidden import Projection, hidden_cosine, hidden_mse, pkd_loss
from kdkit.losses.logits import cross_entropy, hinton_kd, kl_divergence, logit_mse, soft_cross_entropy
from kdkit.losses.multimodal import (SaliencyWeightNet, modality_saliency, msd_loss, msd_meta_gradient,
                                     saliency_weights)
from kdkit.losses.reweighting import (LambdaNet, MetaAdam, l2rw_gradients, l2rw_lambda, lookahead_meta_loss,
                                     meta_net_gradient, per_sample_ce_kd, reweighted_loss, rwkd_features)
from kdkit.losses.ranking import in_batch_ce, margin_mse, maxsim, tct_loss
from kdkit.losses.relation import layer_relation_angle, layer_relation_pair, word_relation_angle, word_relation_pair
from kdkit.losses.smoothing import (beta_smoothing_targets, confidence_penalty, label_smoothing_targets,
                                    soft_target_cross_entropy)
from kdkit.losses.token import token_divergence, topk_log_probs, topk_token_divergence
from kdkit.losses.universal import ProbeSet, universal_kd

__all__ = [
    "SaliencyWeightNet",
    "msd_meta_gradient",
    "LambdaNet",
    "MetaAdam",
    "l2rw_gradients",
    "l2rw_lambda",
    "lookahead_meta_loss",
    "meta_net_gradient",
    "per_sample_ce_kd",
    "reweighted_loss",
    "rwkd_features",
    "ProbeSet",
    "Projection",
    "attention_kl",
    "attention_score_mse",
    "beta_smoothing_targets",
    "confidence_penalty",
    "cross_entropy",
    "hidden_cosine",
    "hidden_mse",
    "hinton_kd",
    "in_batch_ce",
    "kl_divergence",
    "label_smoothing_targets",
    "layer_relation_angle",
    "layer_relation_pair",
    "logit_mse",
    "margin_mse",
    "maxsim",
    "modality_saliency",
    "msd_loss",
    "pkd_loss",
    "reduce_loss",
    "saliency_weights",
    "soft_cross_entropy",
    "soft_target_cross_entropy",
    "tct_loss",
    "token_divergence",
    "topk_log_probs",
    "topk_token_divergence",
    "universal_kd",
    "value_relation_kl",
    "word_relation_angle",
    "word_relation_pair",
]
