import math
import pytest
import torch

from kdkit.errors import ConfigError, ModelError
from kdkit.losses import attention_kl, attention_score_mse, value_relation_kl

MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1]])  # the last sample is left-padded


def scores(seed, batch=3, heads=2, length=4):
    return torch.randn(batch, heads, length, length, generator=torch.Generator().manual_seed(seed))


def probs(seed, mask=MASK, heads=2):
    """Attention probabilities as an eager implementation returns them: padded keys get probability 0."""
    key_pad = ~mask.bool()[:, None, None, :]
    return scores(seed, heads=heads).masked_fill(key_pad, torch.finfo(torch.float32).min).softmax(-1)


def softmax(row):
    exps = [math.exp(x - max(row)) for x in row]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def mean(xs):
    return sum(xs) / len(xs)


def valid(mask, b):
    return [i for i in range(mask.shape[1]) if mask[b, i]]


def test_score_mse_matches_explicit_loop():
    s, t = scores(0), scores(1)
    per_pair = {
        b: [
            mean([(s[b, h, i, j] - t[b, h, i, j]).item() ** 2 for h in range(2)])
            for i in valid(MASK, b)
            for j in valid(MASK, b)
        ]
        for b in range(3)
    }
    out = attention_score_mse(s, t, MASK, reduction="none")
    assert out.tolist() == pytest.approx([mean(per_pair[b]) for b in range(3)], rel=1e-5)
    all_pairs = [v for b in range(3) for v in per_pair[b]]
    assert attention_score_mse(s, t, MASK).item() == pytest.approx(mean(all_pairs), rel=1e-5)
    assert attention_score_mse(s, t, MASK, reduction="sum").item() == pytest.approx(sum(all_pairs), rel=1e-5)


def test_score_mse_with_different_head_counts_compares_head_means():
    s, t = scores(0, heads=2), scores(1, heads=4)
    expected = attention_score_mse(s.mean(1, keepdim=True), t.mean(1, keepdim=True), MASK)
    torch.testing.assert_close(attention_score_mse(s, t, MASK), expected)


def test_attention_kl_matches_explicit_loop():
    s, t = probs(0), probs(1)
    per_sample = [
        mean([mean([kl(t[b, h, i].tolist(), s[b, h, i].tolist()) for h in range(2)]) for i in valid(MASK, b)])
        for b in range(3)
    ]
    out = attention_kl(s, t, MASK, reduction="none")
    assert out.tolist() == pytest.approx(per_sample, rel=1e-5)
    rows = MASK.sum(1).tolist()
    weighted = sum(v * n for v, n in zip(per_sample, rows)) / sum(rows)
    assert attention_kl(s, t, MASK).item() == pytest.approx(weighted, rel=1e-5)


def test_value_relation_kl_matches_explicit_loop():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 4, 4, generator=g), torch.randn(3, 4, 6, generator=g)

    def relation_row(x, b, a, i, heads):
        d = x.shape[-1] // heads
        chunk = lambda tok: x[b, tok, a * d : (a + 1) * d].tolist()  # noqa: E731
        return softmax([sum(u * v for u, v in zip(chunk(i), chunk(j))) / math.sqrt(d) for j in valid(MASK, b)])

    per_sample = [
        mean(
            [
                mean([kl(relation_row(teacher, b, a, i, 2), relation_row(student, b, a, i, 2)) for a in range(2)])
                for i in valid(MASK, b)
            ]
        )
        for b in range(3)
    ]
    out = value_relation_kl(student, teacher, relation_heads=2, mask=MASK, reduction="none")
    assert out.tolist() == pytest.approx(per_sample, rel=1e-5)


def value_relation_2(student, teacher, mask=None, reduction="mean"):
    return value_relation_kl(student, teacher, 2, mask, reduction)


LOSSES = {
    "score_mse": (attention_score_mse, scores),
    "attention_kl": (attention_kl, probs),
    "value_relation": (value_relation_2, lambda seed: scores(seed)[:, 0]),
}


@pytest.mark.parametrize("name", LOSSES)
def test_zero_when_student_equals_teacher(name):
    loss_fn, make = LOSSES[name]
    x = make(0)
    assert loss_fn(x, x.clone(), MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert loss_fn(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_padding_content_is_ignored_and_empty_samples_are_finite(name):
    loss_fn, make = LOSSES[name]
    mask = MASK.clone()
    mask[1] = 0
    s, t = make(0), make(1)
    pad = ~mask.bool()
    # -inf where attention implementations put it, and nan as the worst garbage a padded position can hold
    pad = pad[:, None, :, None] | pad[:, None, None, :] if s.dim() == 4 else pad[..., None]
    noisy_s = torch.where(pad, -float("inf"), s).requires_grad_()
    noisy_t = torch.where(pad, float("nan"), t)
    out = loss_fn(noisy_s, noisy_t, mask, reduction="none")
    torch.testing.assert_close(out, loss_fn(s, t, mask, reduction="none"))
    assert out[1].item() == 0.0
    out.sum().backward()
    assert torch.isfinite(noisy_s.grad).all()
    assert (noisy_s.grad[pad.expand_as(s)] == 0).all()


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_reaches_student_only(name):
    loss_fn, make = LOSSES[name]
    s, t = make(0).requires_grad_(), make(1)
    loss_fn(s, t, MASK).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


@pytest.mark.parametrize("name", LOSSES)
def test_batch_order_invariance(name):
    loss_fn, make = LOSSES[name]
    s, t = make(0), make(1)
    perm = torch.tensor([2, 0, 1])
    none = loss_fn(s, t, MASK, reduction="none")
    torch.testing.assert_close(loss_fn(s[perm], t[perm], MASK[perm], reduction="none"), none[perm])
    torch.testing.assert_close(loss_fn(s[perm], t[perm], MASK[perm]), loss_fn(s, t, MASK))


def test_value_relation_allows_different_widths_but_not_indivisible_ones():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 12, generator=g)
    assert torch.isfinite(value_relation_kl(student, teacher, relation_heads=4))
    with pytest.raises(ConfigError, match="relation_heads 3 does not divide the hidden width 4"):
        value_relation_kl(student, teacher, relation_heads=3)
    with pytest.raises(ConfigError, match="relation_heads 0 must be a positive integer"):
        value_relation_kl(student, teacher, relation_heads=0)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ModelError, match=r"attention_kl: student shape \(3, 2, 4, 4\) does not match teacher"):
        attention_kl(probs(0), probs(1, heads=4))
    with pytest.raises(ModelError, match=r"attention_score_mse: .* teacher shape \(3, 2, 3, 3\) in axes \(0, 2, 3\)"):
        attention_score_mse(scores(0), scores(1, length=3))
    with pytest.raises(ModelError, match=r"value_relation_kl: .* in axes \(0, 1\)"):
        value_relation_kl(torch.zeros(2, 3, 4), torch.zeros(2, 5, 4), relation_heads=2)
