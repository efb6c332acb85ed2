"""Universal-KD (Wu, Rezagholizadeh, Ghaddar, Haidar, Ghodsi, EMNLP 2021): intermediate layers matched in output space.

Every layer's pooled state goes through its own linear *probe* (pseudo-classifier) to class logits. The teacher's
probes are trained first on the frozen teacher; the student's probes are trained with the student. Student layer
i attends over the teacher layers by the similarity of their probe logits and is matched to the mixture:

    α_ij  = softmax_j(z^S_i · z^T_j)
    ẑ^T_i = Σ_j α_ij z^T_j
    L_UKD = mean_i KL(σ(ẑ^T_i/τ) ‖ σ(z^S_i/τ))

Since only logits are compared, teacher and student may have different widths, depths or architectures
(BERT → BiLSTM/CNN).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdkit.errors import ModelError
from kdkit.losses._reduce import check_same_shape, kl_last_axis, reduce_loss


class ProbeSet(nn.Module):
    """One linear probe per layer: ``n`` pooled states ``(B, D_l)`` → probe logits ``(B, n, C)``.

    ``in_dims`` gives each layer's width (they may differ, e.g. for hooked submodules of a non-transformer).
    A distinct class (like :class:`~kdkit.losses.Projection`) so that it is recognisable as a distillation-only
    part: it lives in a loss term, is optimised and checkpointed with the student and never exported.
    """

    def __init__(self, in_dims: Sequence[int], num_classes: int):
        super().__init__()
        self.probes = nn.ModuleList(nn.Linear(d, num_classes) for d in in_dims)

    def forward(self, pooled: Sequence[Tensor]) -> Tensor:
        if len(pooled) != len(self.probes):
            raise ModelError(f"ProbeSet: {len(pooled)} pooled states given for {len(self.probes)} probes")
        weight = self.probes[0].weight
        return torch.stack([probe(x.to(weight.dtype)) for probe, x in zip(self.probes, pooled)], dim=1)


def universal_kd(
    student_probe_logits: Tensor,
    teacher_probe_logits: Tensor,
    temperature: float = 1.0,
    reduction: str = "mean",
    *,
    attention_grad: bool = True,
    t2_scaling: bool = False,
) -> Tensor:
    """Universal-KD loss of Wu et al. (2021) between per-layer probe logits.

    Args:
        student_probe_logits: ``(B, S, C)``, the probe logits z^S_i of the S student layers.
        teacher_probe_logits: ``(B, T, C)``, the frozen teacher probes' logits z^T_j; targets, detached here.
        temperature: τ, applied to both ẑ^T_i and z^S_i inside the softmax of the KL (not to the attention).
        reduction: over the batch, see :func:`kdkit.losses.reduce_loss`; ``"none"`` gives ``(B,)``.
        attention_grad: let gradients flow through α_ij into the student probes, as the formula does (α is a
            function of z^S_i). ``False`` treats the attended target ẑ^T_i as a constant, a plain
            distillation target.
        t2_scaling: multiply by τ² (Hinton's gradient-scale correction). Off by default: the paper's formula has
            no τ² factor.

    Returns:
        Per sample the *mean* over the S student layers of KL(σ(ẑ^T_i/τ) ‖ σ(z^S_i/τ)), reduced over ``B``.
        The paper writes a sum over i; the mean keeps the weight γ comparable across student depths (as for
        every layer-wise term in kdkit); multiply by S for the paper's value.
    """
    check_same_shape("universal_kd", student_probe_logits, teacher_probe_logits, axes=(0, 2))
    teacher = teacher_probe_logits.detach().to(student_probe_logits.dtype)
    scores = student_probe_logits if attention_grad else student_probe_logits.detach()
    alpha = torch.softmax(scores @ teacher.transpose(1, 2), dim=-1)  # (B, S, T), softmax over teacher layers
    target = alpha @ teacher  # (B, S, C): ẑ^T_i
    log_p_t = F.log_softmax(target / temperature, dim=-1)
    log_p_s = F.log_softmax(student_probe_logits / temperature, dim=-1)
    per_sample = kl_last_axis(log_p_t, log_p_s).mean(-1)
    if t2_scaling:
        per_sample = per_sample * temperature**2
    return reduce_loss(per_sample, None, reduction)
