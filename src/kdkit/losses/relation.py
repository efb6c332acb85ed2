"""Contextual Knowledge Distillation, CKD (Park, Kim & Yang, "Distilling Linguistic Context for Language Model
Compression", EMNLP 2021).

CKD transfers *relations* between representations instead of the representations themselves, so the student's
width is free and no projection is needed:

- Word Relation (WR), between the tokens of one layer: :func:`word_relation_pair` (cosine similarities of token
  pairs) and :func:`word_relation_angle` (angles of token triples in a local window);
- Layer Transforming Relation (LTR), between the aligned layers of one token: :func:`layer_relation_pair` and
  :func:`layer_relation_angle`.

Shapes: hidden states ``(B, L, D)`` for WR, stacked aligned layers ``(B, K, L, D)`` for LTR; ``D`` may differ
between student and teacher, the other axes may not. ``mask`` is ``(B, L)`` (1 = real token) or None.
Reductions follow :func:`kdkit.losses.reduce_loss` over the unit each docstring names.

The authors' released code has bugs (the KD term silently off with the documented flag, the LTR weights never
applied, NaN from masking padded positions with ``-inf * 0``); these functions follow the paper.

What a relation is averaged over (``normaliser``): ``"valid"`` (default) averages over the entries that carry a
relation — the rows of a pair relation (its KL summed over the row), the triples of distinct positions of an angle
relation. ``"authors"`` divides the same sum by what the released code (GeondoPark/CKD, ``loss.py``) divides by:
every entry of each relation matrix or tensor, the diagonal and the degenerate triples (which add 0) included —
WR pair ``Σ KL / Σ_b n_b²`` (``n_b`` real tokens), WR angle ``Σ / (real centres · W²)``, LTR pair ``/ (tokens · K²)``,
LTR angle ``/ (tokens · K³)``. ``"authors"`` thus makes a term smaller: by about ``n`` for WR pair, by ``K`` for LTR
pair, by ``K² / ((K−1)(K−2))`` for LTR angle and by the share of real neighbours in the window for WR angle; with it
the paper's weights mean what they meant in the authors' runs. It does not copy what the code sums that the paper
does not define (its WR angle also counts padded neighbours and repeats the first token for centres near the
start); only the divisor. Padded inputs
are zeroed with ``torch.where`` before any arithmetic, so padding content (even NaN) reaches neither the value
nor the gradient. Relations are computed in float32: the angle forms use Gram-matrix identities whose
differences lose precision in half precision.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from kdkit.errors import ConfigError
from kdkit.losses._reduce import check_same_shape, kl_last_axis, pair_mask, reduce_loss, zero_invalid

NORMALISERS = ("valid", "authors")

# squared distances below this count as 0 (a point coinciding with the centre has no direction); such entries
# are excluded from the loss, the clamp only keeps their (unused) arithmetic finite
_EPS = 1e-12


def _clean(x: Tensor, token_mask: Tensor | None) -> Tensor:
    """``x`` in (at least) float32 with padded positions set to 0 (``token_mask`` broadcastable to ``x``;
    None = all real)."""
    return zero_invalid(x.to(torch.promote_types(x.dtype, torch.float32)), token_mask)


def _check_normaliser(what: str, normaliser: str) -> None:
    if normaliser not in NORMALISERS:
        raise ConfigError(f"{what} normaliser {normaliser!r} is not one of {', '.join(NORMALISERS)}")


def _row_relation_kl(student_unit: Tensor, teacher_unit: Tensor, valid: Tensor) -> Tensor:
    """Σ_j KL over rows of ``softmax_j(cos)`` restricted to ``valid`` (…, N, N); returns (…, N)."""
    fill = torch.finfo(student_unit.dtype).min
    log_p = [F.log_softmax((u @ u.transpose(-1, -2)).masked_fill(~valid, fill), dim=-1)
             for u in (student_unit, teacher_unit)]
    return kl_last_axis(log_p[1], log_p[0], valid)


def word_relation_pair(
    student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None, reduction: str = "mean",
    normaliser: str = "valid",
) -> Tensor:
    """Pair-wise Word Relation of CKD: ``KL(P^t_i ‖ P^s_i)`` per valid token ``i`` of one layer.

    ``C_ij = cos(r_i, r_j)`` for real tokens ``j ≠ i``; ``P_i = softmax_j(C_i·)`` over those ``j`` only (the diagonal
    and padding are excluded from the softmax); the KL is summed over ``j``. What is averaged: the rows, i.e. the
    real tokens that have at least one other real token (``"mean"``: over all such rows of the batch;
    ``"none"``: each sample's mean over its own rows, 0 for a sample with none). Averaging per row (token) rather
    than per (i, j) pair follows the per-token convention of the other sequence losses (MiniLM's attention KL);
    the paper leaves the normaliser unstated. ``normaliser="authors"``: the summed KL divided by the number of
    (i, j) pairs of real tokens, diagonal included (``n_b²`` per sample), as the released code does.

    Args:
        student_hidden: ``(B, L, D_s)``; teacher_hidden: ``(B, L, D_t)`` (widths may differ).
        mask: ``(B, L)`` or None.
        normaliser: ``"valid"`` or ``"authors"`` (module docstring).
    """
    check_same_shape("word_relation_pair", student_hidden, teacher_hidden, axes=(0, 1))
    _check_normaliser("word_relation_pair", normaliser)
    batch, length = student_hidden.shape[:2]
    token = None if mask is None else mask.bool()[..., None]
    s, t = (F.normalize(_clean(x, token), dim=-1) for x in (student_hidden, teacher_hidden))
    eye = torch.eye(length, dtype=torch.bool, device=s.device)
    pairs = pair_mask(mask, batch, length, s.device)
    valid = pairs & ~eye
    rows = _row_relation_kl(s, t, valid)
    if normaliser == "authors":  # each row's KL on the diagonal of the (B, L, L) pair grid, counted over every pair
        return reduce_loss(torch.diag_embed(zero_invalid(rows, valid.any(-1))), pairs, reduction)
    return reduce_loss(rows, valid.any(-1), reduction)


def _angles(gram: Tensor, centre: Tensor) -> Tensor:
    """``ψ(a, c, b) = ⟨(r_c−r_a)/‖r_c−r_a‖, (r_c−r_b)/‖r_c−r_b‖⟩`` from the Gram matrix of the points.

    ``gram`` is ``(…, P, P)`` of inner products ``⟨r_p, r_q⟩``; ``centre`` indexes the centres ``c``. Returns
    ``(…, C, P, P)`` indexed ``[c, a, b]``. Working from inner products keeps memory at ``P²`` per centre instead
    of ``P²·D`` for the difference vectors. Entries with ``a = c`` or ``b = c`` are meaningless; callers exclude them.
    """
    sq = gram.diagonal(dim1=-2, dim2=-1)
    g_c, sq_c = gram[..., centre, :], sq[..., centre]
    inv = (sq_c[..., None] + sq[..., None, :] - 2 * g_c).clamp_min(_EPS).rsqrt()
    dot = sq_c[..., None, None] - g_c[..., :, None] - g_c[..., None, :] + gram[..., None, :, :]
    return dot * inv[..., :, None] * inv[..., None, :]


def _banded_gram(x: Tensor, width: int) -> Tensor:
    """``band[b, i, δ] = ⟨x_i, x_{i+δ}⟩`` for ``δ < width`` (0 past the end): ``(B, L, width)`` from ``(B, L, D)``."""
    length = x.shape[1]
    bands = [F.pad(torch.linalg.vecdot(x[:, : length - d], x[:, d:]), (0, d)) for d in range(min(width, length))]
    band = torch.stack(bands, dim=-1)
    return F.pad(band, (0, width - band.shape[-1]))


def _window_gram(x: Tensor, half: int) -> Tensor:
    """Gram matrix of each token's window ``c−half … c+half``: ``(B, L, W, W)``, ``W = 2·half + 1``, centre at
    ``half``; positions outside the sequence are zero vectors. Memory ``B·L·W²``, never ``L²`` or ``L·W·D``."""
    width = 2 * half + 1
    length = x.shape[1]
    band = _banded_gram(F.pad(x, (0, 0, half, half)), width)  # padded position p = token p − half
    k = torch.arange(width, device=x.device)
    low, gap = torch.minimum(k[:, None], k[None, :]), (k[:, None] - k[None, :]).abs()
    rows = torch.arange(length, device=x.device)[:, None, None] + low  # window slot k of centre c is p = c + k
    return band[:, rows, gap.expand_as(rows)]


def word_relation_angle(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    mask: Tensor | None = None,
    window: int = 21,
    reduction: str = "mean",
    normaliser: str = "valid",
) -> Tensor:
    """Triple-wise (angle) Word Relation of CKD: mean squared difference of ``ψ(a, c, b)`` over valid triples.

    ``ψ(a, c, b) = ⟨(r_c−r_a)/‖r_c−r_a‖, (r_c−r_b)/‖r_c−r_b‖⟩`` for a centre token ``c`` and neighbours ``a, b``
    within ``±window//2`` positions of it (the paper's window of 21 = ±10). A triple counts when ``c``, ``a`` and
    ``b`` are real tokens, ``a ≠ c``, ``b ≠ c`` and ``a ≠ b``: ``a = b`` always gives ``ψ = 1`` for both models and
    would only dilute the mean. Ordered pairs are counted, so each unordered ``{a, b}`` appears twice, which
    leaves the mean unchanged. ``"mean"``: over all valid triples of the batch; ``"none"``: each sample's mean
    over its own triples (0 for a sample with none). Memory is ``B·L·W²`` (``W = 2·(window//2) + 1``).

    Args:
        student_hidden: ``(B, L, D_s)``; teacher_hidden: ``(B, L, D_t)`` (widths may differ).
        mask: ``(B, L)`` or None.
        window: window size, ≥ 3 (an even value acts as the next odd one).
        normaliser: ``"valid"``, or ``"authors"``: the same sum divided by ``W²`` per real centre token.
    """
    check_same_shape("word_relation_angle", student_hidden, teacher_hidden, axes=(0, 1))
    _check_normaliser("word_relation_angle", normaliser)
    if not (isinstance(window, int) and window >= 3):
        raise ConfigError(f"word_relation_angle window {window!r} must be an integer ≥ 3 (two neighbours)")
    half = window // 2
    batch, length = student_hidden.shape[:2]
    token = None if mask is None else mask.bool()[..., None]
    centre = torch.tensor([half], device=student_hidden.device)
    psi_s, psi_t = (_angles(_window_gram(_clean(x, token), half), centre)[..., 0, :, :]
                    for x in (student_hidden, teacher_hidden))
    real = torch.ones(batch, length, dtype=torch.bool, device=psi_s.device) if mask is None else mask.bool()
    slots = F.pad(real, (half, half)).unfold(1, 2 * half + 1, 1).clone()  # (B, L, W): slot is a real token
    slots[..., half] = False  # a ≠ c, b ≠ c
    distinct = ~torch.eye(2 * half + 1, dtype=torch.bool, device=psi_s.device)
    valid = real[..., None, None] & slots[..., :, None] & slots[..., None, :] & distinct
    if normaliser == "authors":
        return reduce_loss(zero_invalid((psi_s - psi_t).pow(2), valid), real[..., None, None], reduction)
    return reduce_loss((psi_s - psi_t).pow(2), valid, reduction)


def _check_layers(what: str, student_layers: Tensor, teacher_layers: Tensor, min_layers: int) -> None:
    check_same_shape(what, student_layers, teacher_layers, axes=(0, 1, 2))
    if student_layers.dim() != 4:
        raise ConfigError(f"{what}: expected stacked layers (B, K, L, D), got shape {tuple(student_layers.shape)}")
    if student_layers.shape[1] < min_layers:
        raise ConfigError(f"{what} needs at least {min_layers} aligned layers, got K = {student_layers.shape[1]}")


def _per_token(layers: Tensor, mask: Tensor | None) -> Tensor:
    """``(B, K, L, D)`` -> ``(B, L, K, D)`` float32 with padded tokens zeroed."""
    token = None if mask is None else mask.bool()[:, None, :, None]
    return _clean(layers, token).transpose(1, 2)


def layer_relation_pair(
    student_layers: Tensor, teacher_layers: Tensor, mask: Tensor | None = None, reduction: str = "mean",
    normaliser: str = "valid",
) -> Tensor:
    """Pair-wise Layer Transforming Relation of CKD: per token, KL between the layer-similarity distributions.

    For each token, ``C_kl = cos(h^k, h^l)`` over its ``K`` aligned layer vectors; ``P_k = softmax_{l≠k}(C_k·)``
    (diagonal dropped); ``KL(P^t_k ‖ P^s_k)`` summed over ``l``, averaged over the ``K`` rows, then reduced over
    real tokens (``"mean"``: per real token of the batch; ``"none"``: each sample's mean over its tokens).

    Args:
        student_layers: ``(B, K, L, D_s)``; teacher_layers: ``(B, K, L, D_t)`` — the aligned layers stacked in
            map order (widths may differ); ``K ≥ 2``.
        mask: ``(B, L)`` or None.
        normaliser: ``"valid"``, or ``"authors"``: the rows' KL summed and divided by ``K²`` per token.
    """
    _check_layers("layer_relation_pair", student_layers, teacher_layers, 2)
    _check_normaliser("layer_relation_pair", normaliser)
    s, t = (F.normalize(_per_token(x, mask), dim=-1) for x in (student_layers, teacher_layers))
    k = s.shape[2]
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=s.device)
    per_token = _row_relation_kl(s, t, off_diagonal).sum(-1) / (k * k if normaliser == "authors" else k)
    return reduce_loss(per_token, mask, reduction)


def layer_relation_angle(
    student_layers: Tensor, teacher_layers: Tensor, mask: Tensor | None = None, reduction: str = "mean",
    normaliser: str = "valid",
) -> Tensor:
    """Triple-wise (angle) Layer Transforming Relation of CKD: per token, mean squared difference of
    ``ψ(a, c, b)`` over triples of its aligned layers.

    ``ψ`` is the angle of :func:`word_relation_angle` with layer vectors ``h^a, h^c, h^b`` of one token in place of
    token vectors; every layer is a centre and all ``K·(K−1)·(K−2)`` triples of distinct layers count (``K`` is
    small, so no window). ``"mean"``: over all triples of real tokens of the batch (every real token has the same
    number, so this is also the per-token mean); ``"none"``: each sample's mean.

    Args:
        student_layers: ``(B, K, L, D_s)``; teacher_layers: ``(B, K, L, D_t)``; ``K ≥ 3``.
        mask: ``(B, L)`` or None.
        normaliser: ``"valid"``, or ``"authors"``: the same sum divided by ``K³`` per token.
    """
    _check_layers("layer_relation_angle", student_layers, teacher_layers, 3)
    _check_normaliser("layer_relation_angle", normaliser)
    k = student_layers.shape[1]
    centres = torch.arange(k, device=student_layers.device)
    psi_s, psi_t = (_angles(u @ u.transpose(-1, -2), centres)
                    for u in (_per_token(x, mask) for x in (student_layers, teacher_layers)))
    distinct = (centres[:, None, None] != centres[None, :, None]) & (centres[:, None, None] != centres[None, None, :])
    distinct &= centres[None, :, None] != centres[None, None, :]
    valid = distinct if mask is None else mask.bool()[:, :, None, None, None] & distinct
    if normaliser == "authors":
        token = None if mask is None else mask.bool()[:, :, None, None, None]
        return reduce_loss(zero_invalid((psi_s - psi_t).pow(2), valid), token, reduction)
    return reduce_loss((psi_s - psi_t).pow(2), valid, reduction)
