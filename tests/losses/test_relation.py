"""CKD relation losses (word relation, layer transforming relation) against plain-loop references and properties."""

from __future__ import annotations

import math

import pytest
import torch

from kdkit.errors import ConfigError, ModelError
from kdkit.losses import layer_relation_angle, layer_relation_pair, word_relation_angle, word_relation_pair

WORD = (word_relation_pair, word_relation_angle)
LAYER = (layer_relation_pair, layer_relation_angle)
ALL = WORD + LAYER
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])


def _word(batch=3, length=7, width=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, width, generator=g, dtype=torch.float64)


def _layers(batch=3, k=4, length=7, width=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, k, length, width, generator=g, dtype=torch.float64)


def _inputs(fn, width, seed):
    return _word(width=width, seed=seed) if fn in WORD else _layers(width=width, seed=seed)


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def _unit(v):
    return v / v.norm()


def _kl_of_softmax(teacher_scores, student_scores):
    p = [math.exp(x) for x in teacher_scores]
    q = [math.exp(x) for x in student_scores]
    p, q = [x / sum(p) for x in p], [x / sum(q) for x in q]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _psi(x, a, c, b):
    return float(_unit(x[c] - x[a]) @ _unit(x[c] - x[b]))


def loop_word_pair(s, t, mask):
    """Per sample: mean over real tokens with another real token of KL over the other real tokens."""
    out = []
    for b in range(s.shape[0]):
        real = [i for i in range(s.shape[1]) if mask[b, i]]
        rows = [_kl_of_softmax([_cos(t[b, i], t[b, j]) for j in real if j != i],
                               [_cos(s[b, i], s[b, j]) for j in real if j != i]) for i in real if len(real) > 1]
        out.append(rows)
    return out


def loop_word_angle(s, t, mask, window):
    out, half = [], window // 2
    for b in range(s.shape[0]):
        real = {i for i in range(s.shape[1]) if mask[b, i]}
        terms = []
        for c in sorted(real):
            near = [i for i in range(c - half, c + half + 1) if i in real and i != c]
            terms += [(_psi(s[b], a, c, d) - _psi(t[b], a, c, d)) ** 2 for a in near for d in near if a != d]
        out.append(terms)
    return out


def loop_layer_pair(s, t, mask):
    out = []
    for b in range(s.shape[0]):
        k = s.shape[1]
        rows = []
        for i in [i for i in range(s.shape[2]) if mask[b, i]]:
            kls = [_kl_of_softmax([_cos(t[b, m, i], t[b, n, i]) for n in range(k) if n != m],
                                  [_cos(s[b, m, i], s[b, n, i]) for n in range(k) if n != m]) for m in range(k)]
            rows.append(sum(kls) / k)
        out.append(rows)
    return out


def loop_layer_angle(s, t, mask):
    out = []
    for b in range(s.shape[0]):
        k, terms = s.shape[1], []
        for i in [i for i in range(s.shape[2]) if mask[b, i]]:
            terms += [(_psi(s[b, :, i], a, c, d) - _psi(t[b, :, i], a, c, d)) ** 2
                      for c in range(k) for a in range(k) for d in range(k) if len({a, c, d}) == 3]
        out.append(terms)
    return out


def _check_against_loop(got_fn, per_sample):
    flat = [v for sample in per_sample for v in sample]
    assert float(got_fn("mean")) == pytest.approx(sum(flat) / len(flat), rel=1e-5)
    assert float(got_fn("sum")) == pytest.approx(sum(flat), rel=1e-5)
    expected = [sum(v) / len(v) if v else 0.0 for v in per_sample]
    assert got_fn("none").tolist() == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_word_pair_matches_a_plain_loop():
    s, t = _word(width=5, seed=1), _word(width=3, seed=2)
    _check_against_loop(lambda r: word_relation_pair(s, t, MASK, reduction=r), loop_word_pair(s, t, MASK))


@pytest.mark.parametrize("window", [3, 5, 21])
def test_word_angle_matches_a_plain_loop(window):
    s, t = _word(width=5, seed=1), _word(width=3, seed=2)
    _check_against_loop(lambda r: word_relation_angle(s, t, MASK, window=window, reduction=r),
                        loop_word_angle(s, t, MASK, window))


def test_layer_pair_and_angle_match_a_plain_loop():
    s, t = _layers(width=5, seed=1), _layers(width=3, seed=2)
    _check_against_loop(lambda r: layer_relation_pair(s, t, MASK, reduction=r), loop_layer_pair(s, t, MASK))
    _check_against_loop(lambda r: layer_relation_angle(s, t, MASK, reduction=r), loop_layer_angle(s, t, MASK))


def test_word_pair_by_hand():
    # student: tokens 0 and 1 parallel, 2 orthogonal; teacher: all three orthogonal, so P^t rows are uniform
    s = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]])
    t = torch.eye(3)[None]
    e = math.e
    row0 = math.log(0.5 / (e / (e + 1))) * 0.5 + math.log(0.5 / (1 / (e + 1))) * 0.5  # row 1 is the same
    row2 = 0.0  # cos(r2, r0) = cos(r2, r1) = 0 in both
    assert float(word_relation_pair(s, t)) == pytest.approx((2 * row0 + row2) / 3, rel=1e-6)


def test_word_angle_by_hand():
    # a right angle at the centre token 1 in the student, a straight line (ψ = −1) in the teacher
    s = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    t = torch.tensor([[[-1.0], [0.0], [1.0]]])
    mask = torch.tensor([[1, 1, 1]])
    # window 3: only centre 1 has two real neighbours; triples (0,1,2) and (2,1,0) each (0 − (−1))² = 1
    assert float(word_relation_angle(s, t, mask, window=3)) == pytest.approx(1.0)
    # window 5: centres 0 and 2 add ψ(1,0,2), ψ(2,0,1) and ψ(0,2,1), ψ(1,2,0): student cos 45° = 1/√2, teacher 1
    expected = (2 * 1.0 + 4 * (1 / math.sqrt(2) - 1) ** 2) / 6
    assert float(word_relation_angle(s, t, mask, window=5)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("fn", ALL)
def test_zero_when_student_equals_teacher(fn):
    x = _inputs(fn, 5, 0)
    assert float(fn(x, x.clone(), MASK)) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("fn", [word_relation_pair, layer_relation_pair])
def test_cosine_forms_ignore_the_length_of_each_vector(fn):
    s, t = _inputs(fn, 5, 1), _inputs(fn, 3, 2)
    scale = torch.rand(s.shape[:-1] + (1,), generator=torch.Generator().manual_seed(3), dtype=s.dtype) * 10 + 0.1
    assert float(fn(s * scale, t, MASK)) == pytest.approx(float(fn(s, t, MASK)), rel=1e-6)


@pytest.mark.parametrize("fn", ALL)
def test_invariant_to_scaling_all_hidden_vectors(fn):
    s, t = _inputs(fn, 5, 1), _inputs(fn, 3, 2)
    assert float(fn(s * 7.5, t * 0.01, MASK)) == pytest.approx(float(fn(s, t, MASK)), rel=1e-5)


@pytest.mark.parametrize("fn", ALL)
def test_widths_may_differ_but_other_axes_may_not(fn):
    s, t = _inputs(fn, 16, 1), _inputs(fn, 3, 2)
    assert torch.isfinite(fn(s, t, MASK))
    with pytest.raises(ModelError, match=fn.__name__):
        fn(s[:, :-1], t, MASK[:, :-1])


@pytest.mark.parametrize("fn", ALL)
def test_padding_content_never_counts_and_gives_no_nan(fn):
    s, t = _inputs(fn, 5, 1).float(), _inputs(fn, 3, 2).float()
    pad = ~MASK.bool()
    where = pad[:, :, None] if fn in WORD else pad[:, None, :, None]
    noisy_s = torch.where(where, torch.full_like(s, float("nan")), s).requires_grad_()
    noisy_t = torch.where(where, torch.full_like(t, float("-inf")), t)
    for reduction in ("mean", "sum", "none"):
        clean = fn(s, t, MASK, reduction=reduction)
        noisy = fn(noisy_s, noisy_t, MASK, reduction=reduction)
        assert torch.allclose(noisy, clean, rtol=1e-5, atol=1e-7), reduction
    fn(noisy_s, noisy_t, MASK).backward()
    assert torch.isfinite(noisy_s.grad).all()
    assert (noisy_s.grad[where.expand_as(s)] == 0).all()


@pytest.mark.parametrize("fn", ALL)
def test_fully_padded_and_single_token_rows(fn):
    s, t = _inputs(fn, 5, 1).float().requires_grad_(), _inputs(fn, 3, 2).float()
    mask = MASK.clone()
    mask[1] = 0  # a sample without tokens; sample 2 has a single token
    per_sample = fn(s, t, mask, reduction="none")
    assert torch.isfinite(per_sample).all()
    assert per_sample[1] == 0
    if fn in WORD:  # one token has no pair and no triple
        assert per_sample[2] == 0
    fn(s, t, torch.zeros_like(mask)).backward()
    assert torch.isfinite(s.grad).all() and (s.grad == 0).all()


@pytest.mark.parametrize("fn", ALL)
def test_gradients_reach_the_student_only(fn):
    s = _inputs(fn, 5, 1).requires_grad_()
    t = _inputs(fn, 3, 2).requires_grad_()
    fn(s, t.detach(), MASK).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("fn", ALL)
def test_batch_order_does_not_matter(fn):
    s, t = _inputs(fn, 5, 1), _inputs(fn, 3, 2)
    perm = torch.tensor([2, 0, 1])
    assert float(fn(s[perm], t[perm], MASK[perm])) == pytest.approx(float(fn(s, t, MASK)), rel=1e-10)
    assert torch.allclose(fn(s[perm], t[perm], MASK[perm], reduction="none"), fn(s, t, MASK, reduction="none")[perm])


@pytest.mark.parametrize("fn", ALL)
def test_no_mask_means_every_token_counts(fn):
    s, t = _inputs(fn, 5, 1), _inputs(fn, 3, 2)
    assert float(fn(s, t)) == pytest.approx(float(fn(s, t, torch.ones(3, 7))), rel=1e-10)


def test_half_precision_inputs_are_computed_in_float32():
    s, t = _word(width=8, seed=1), _word(width=8, seed=2)
    full = word_relation_angle(s, t, MASK)
    half = word_relation_angle(s.bfloat16(), t.bfloat16(), MASK)
    assert half.dtype == torch.float32 and float(half) == pytest.approx(float(full), rel=0.1)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ConfigError, match="window"):
        word_relation_angle(_word(), _word(), window=2)
    with pytest.raises(ConfigError, match="at least 3 aligned layers"):
        layer_relation_angle(_layers(k=2), _layers(k=2))
    with pytest.raises(ConfigError, match="at least 2 aligned layers"):
        layer_relation_pair(_layers(k=1), _layers(k=1))
    with pytest.raises(ConfigError, match="reduction"):
        word_relation_pair(_word(), _word(), reduction="avg")


def test_word_angle_on_a_long_sequence():
    # 4096 tokens: the windowed form holds B·L·W² values; an L³ form would need 6.9e10 and could not run here
    x = torch.randn(1, 4096, 8)
    y = x + 0.1 * torch.randn(1, 4096, 8)
    value = word_relation_angle(x, y, window=5)
    assert torch.isfinite(value) and 0 < float(value) < 4


def _check_authors(got_fn, per_sample, divisors):
    """``normaliser="authors"``: the same per-sample sums, divided by the released code's entry counts."""
    sums = [sum(v) for v in per_sample]
    assert float(got_fn("mean")) == pytest.approx(sum(sums) / sum(divisors), rel=1e-5)
    assert float(got_fn("sum")) == pytest.approx(sum(sums), rel=1e-5)
    assert got_fn("none").tolist() == pytest.approx([v / d for v, d in zip(sums, divisors)], rel=1e-5, abs=1e-12)


def test_authors_normaliser_divides_the_same_sums_by_every_entry_of_the_relation():
    s_w, t_w = _word(width=5, seed=1), _word(width=3, seed=2)
    s_l, t_l = _layers(width=5, seed=1), _layers(width=3, seed=2)
    n = [int(v) for v in MASK.sum(1)]
    k = s_l.shape[1]
    _check_authors(lambda r: word_relation_pair(s_w, t_w, MASK, reduction=r, normaliser="authors"),
                   loop_word_pair(s_w, t_w, MASK), [m * m for m in n])  # n² pairs, diagonal included
    _check_authors(lambda r: word_relation_angle(s_w, t_w, MASK, window=5, reduction=r, normaliser="authors"),
                   loop_word_angle(s_w, t_w, MASK, 5), [m * 25 for m in n])  # W² slots per real centre
    # per token: the rows' KL summed (k × the loop's row mean) over K² entries instead of K rows
    per_token = [[k * v / (k * k) for v in sample] for sample in loop_layer_pair(s_l, t_l, MASK)]
    _check_authors(lambda r: layer_relation_pair(s_l, t_l, MASK, reduction=r, normaliser="authors"), per_token, n)
    _check_authors(lambda r: layer_relation_angle(s_l, t_l, MASK, reduction=r, normaliser="authors"),
                   loop_layer_angle(s_l, t_l, MASK), [m * k ** 3 for m in n])


def test_authors_word_pair_is_the_released_codes_formula():
    # GeondoPark/CKD loss.py WR_Dist ("cos"), written out: softmax over cosines with the diagonal and padding at
    # -inf, KL summed over every entry, divided by the number of (i, j) pairs of real tokens
    s, t = _word(width=5, seed=1), _word(width=3, seed=2)
    m = MASK.bool()
    pairs = m[:, :, None] & m[:, None, :]
    blocked = ~pairs | torch.eye(7, dtype=torch.bool)

    def relation(x):
        x = torch.nn.functional.normalize(x, dim=-1)
        return (x @ x.transpose(1, 2)).masked_fill(blocked, float("-inf"))

    p_t = torch.softmax(relation(t), -1).nan_to_num(0.0)  # a row with no other token is NaN; the code's KL drops it
    log_p_s = torch.log_softmax(relation(s), -1)
    kl = torch.where(p_t > 0, p_t * (p_t.log() - log_p_s), torch.zeros(()))
    expected = kl.sum() / pairs.sum()
    assert float(word_relation_pair(s, t, MASK, normaliser="authors")) == pytest.approx(float(expected), rel=1e-10)


def test_authors_normaliser_only_shrinks_the_valid_mean():
    for fn in ALL:
        s, t = _inputs(fn, 5, 1), _inputs(fn, 3, 2)
        valid, authors = float(fn(s, t, MASK)), float(fn(s, t, MASK, normaliser="authors"))
        assert 0 < authors < valid, fn.__name__
        with pytest.raises(ConfigError, match="normaliser 'paper' is not one of valid, authors"):
            fn(s, t, MASK, normaliser="paper")
