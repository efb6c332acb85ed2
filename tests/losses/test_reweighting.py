"""RW-KD tensors: per-sample CE/KD, the λ mix, the meta network, the look-ahead meta-gradient (checked against
central finite differences in float64), L2RW weights and the buffer-held meta Adam."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdkit.losses import (LambdaNet, MetaAdam, cross_entropy, kl_divergence, l2rw_gradients, l2rw_lambda,
                          lookahead_meta_loss, meta_net_gradient, per_sample_ce_kd, reweighted_loss, rwkd_features)


def test_reweighted_loss_hand_computed():
    ce = torch.tensor([1.0, 2.0, 4.0])
    kd = torch.tensor([3.0, 0.0, 1.0])
    lam = torch.tensor([0.0, 0.5, 1.0])
    # (1·1 + 0·3) + (0.5·2 + 0.5·0) + (0·4 + 1·1) = 3, over 3 samples
    assert reweighted_loss(ce, kd, lam).item() == pytest.approx(1.0)
    # λ = α for every sample is Hinton's fixed-α mix
    alpha = torch.full((3,), 0.3)
    assert reweighted_loss(ce, kd, alpha).item() == pytest.approx((0.7 * ce + 0.3 * kd).mean().item())


def test_per_sample_ce_kd_match_the_reduced_losses():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 2, 1, 1, 0])
    ce, kd = per_sample_ce_kd(s, t, y, temperature=2.0)
    assert ce.shape == kd.shape == (5,)
    assert ce.mean().item() == pytest.approx(cross_entropy(s, y).item(), rel=1e-6)
    assert kd.mean().item() == pytest.approx(kl_divergence(s, t, 2.0).item(), rel=1e-6)
    assert per_sample_ce_kd(t, t, y)[1].abs().max().item() < 1e-6  # KD is 0 when student equals teacher
    # batch order: per-sample values permute with the samples
    perm = torch.tensor([4, 2, 0, 1, 3])
    ce_p, kd_p = per_sample_ce_kd(s[perm], t[perm], y[perm], temperature=2.0)
    torch.testing.assert_close(ce_p, ce[perm])
    torch.testing.assert_close(kd_p, kd[perm])


def test_per_sample_ce_kd_sequences_ignore_padding():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    y = torch.tensor([[1, 2, -100, -100], [0, 1, 2, 3]])
    s_pad = s.clone()
    s_pad[0, 2:] = float("inf")  # padded positions never count, even when non-finite
    ce, kd = per_sample_ce_kd(s_pad, t, y)
    assert torch.isfinite(ce).all() and torch.isfinite(kd).all()
    ce_ref, _ = per_sample_ce_kd(s[:1, :2], t[:1, :2], y[:1, :2])
    assert ce[0].item() == pytest.approx(ce_ref.item(), rel=1e-6)


def test_features_and_lambda_net():
    t = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([1, 0])
    ce, kd = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 2.0])
    f = rwkd_features(ce, kd, t, y)
    p = 1 / (1 + math.exp(-2.0))
    torch.testing.assert_close(f, torch.tensor([[math.log(2.0), math.log(1.5), p, 1 - p],
                                                [0.0, math.log(3.0), 0.5, 0.5]]))
    net = LambdaNet(hidden=8)
    torch.testing.assert_close(net(f), torch.full((2,), 0.5))  # zero output layer: λ starts at 0.5
    torch.manual_seed(0)
    for p_ in net.parameters():
        nn.init.normal_(p_, std=5.0)
    lam = net(torch.randn(100, 4) * 10)
    assert lam.shape == (100,) and (lam >= 0).all() and (lam <= 1).all()


class TinyStudent(nn.Module):
    """A bag-of-embeddings classifier that takes the student's keyword inputs."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask):
        m = attention_mask[..., None].to(self.embed.weight.dtype)
        return self.head(torch.tanh((self.embed(input_ids) * m).sum(1) / m.sum(1)))


def _setup():
    torch.manual_seed(0)
    student = TinyStudent().double()
    train = {"input_ids": torch.randint(0, 7, (5, 3)), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]] * 2
                                                                                       + [[1, 0, 0]])}
    meta = {"input_ids": torch.randint(0, 7, (4, 3)), "attention_mask": torch.ones(4, 3, dtype=torch.long)}
    y, y_meta = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([2, 0, 1, 1])
    t_logits = torch.randn(5, 3, dtype=torch.float64) * 2
    params = {n: p for n, p in student.named_parameters()}

    def ce_kd(logits):
        return per_sample_ce_kd(logits, t_logits, y, temperature=2.0)

    return student, params, train, meta, y_meta, ce_kd, t_logits, y


def test_meta_net_gradient_matches_finite_differences():
    student, params, train, meta, y_meta, ce_kd, t_logits, y = _setup()
    net = LambdaNet(hidden=3).double()
    for p in net.parameters():  # away from the zero init, so every parameter has a gradient
        nn.init.normal_(p, std=0.7)
    with torch.no_grad():
        features = rwkd_features(*ce_kd(student(**train)), t_logits, y)
    lr = 0.5

    def meta_value() -> float:
        return lookahead_meta_loss(student, params, train,
                                   lambda logits: reweighted_loss(*ce_kd(logits), net(features)),
                                   meta, y_meta, lr).item()

    _, grads = meta_net_gradient(net, features, ce_kd, student, params, train, meta, y_meta, lr)
    assert all(p.grad is None for p in student.parameters())  # the look-ahead never writes student gradients
    h = 1e-6
    for weight, grad in zip(net.parameters(), grads):
        numeric = torch.zeros_like(weight)
        for i in range(weight.numel()):
            flat = weight.data.view(-1)
            keep = flat[i].item()
            flat[i] = keep + h
            up = meta_value()
            flat[i] = keep - h
            down = meta_value()
            flat[i] = keep
            numeric.view(-1)[i] = (up - down) / (2 * h)
        torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-9)
    assert max(g.abs().max().item() for g in grads) > 1e-4  # the check is not vacuous


def test_lookahead_with_zero_step_is_plain_meta_ce():
    student, params, train, meta, y_meta, ce_kd, *_ = _setup()
    value = lookahead_meta_loss(student, params, train, lambda logits: ce_kd(logits)[0].mean(), meta, y_meta, 0.0)
    assert value.item() == pytest.approx(cross_entropy(student(**meta), y_meta).item())


def test_l2rw_gradients_match_finite_differences_and_lambda():
    student, params, train, meta, y_meta, ce_kd, *_ = _setup()
    lr = 0.5
    grad_ce, grad_kd = l2rw_gradients(ce_kd, 5, student, params, train, meta, y_meta, lr)

    def meta_at(eps_ce, eps_kd) -> float:
        def loss(logits):
            ce, kd = ce_kd(logits)
            return (eps_ce * ce + eps_kd * kd).mean()
        return lookahead_meta_loss(student, params, train, loss, meta, y_meta, lr).item()

    h, zero = 1e-6, torch.zeros(5, dtype=torch.float64)
    for i in range(5):
        e = zero.clone()
        e[i] = h
        assert grad_ce[i].item() == pytest.approx((meta_at(e, zero) - meta_at(-e, zero)) / (2 * h), rel=1e-5, abs=1e-10)
        assert grad_kd[i].item() == pytest.approx((meta_at(zero, e) - meta_at(zero, -e)) / (2 * h), rel=1e-5, abs=1e-10)
    lam, w_ce, w_kd = l2rw_lambda(grad_ce, grad_kd)
    assert (lam >= 0).all() and (lam <= 1).all()
    assert (w_ce + w_kd).sum().item() == pytest.approx(1.0)


def test_l2rw_lambda_signs_and_normalisation():
    grad_ce = torch.tensor([-1.0, 2.0, -3.0, 1.0])
    grad_kd = torch.tensor([-3.0, -2.0, 1.0, 4.0])
    lam, w_ce, w_kd = l2rw_lambda(grad_ce, grad_kd)
    # w = max(−g, 0) = ce [1, 0, 3, 0], kd [3, 2, 0, 0]; total 9
    torch.testing.assert_close(w_ce, torch.tensor([1.0, 0.0, 3.0, 0.0]) / 9)
    torch.testing.assert_close(w_kd, torch.tensor([3.0, 2.0, 0.0, 0.0]) / 9)
    torch.testing.assert_close(lam, torch.tensor([0.75, 1.0, 0.0, 0.5]))  # 0.5 where both weights are 0
    lam, w_ce, w_kd = l2rw_lambda(torch.ones(3), torch.ones(3))  # nothing helps: uniform weights, even mix
    torch.testing.assert_close(w_ce, torch.full((3,), 1 / 6))
    torch.testing.assert_close(lam, torch.full((3,), 0.5))


def test_meta_adam_matches_torch_adam():
    torch.manual_seed(0)
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    ours = MetaAdam(list(a.parameters()), lr=0.01)
    reference = torch.optim.Adam(b.parameters(), lr=0.01)
    for _ in range(5):
        x = torch.randn(4, 3)
        grads = torch.autograd.grad(a(x).pow(2).sum(), list(a.parameters()))
        b.zero_grad()
        b(x).pow(2).sum().backward()
        with torch.no_grad():
            ours.step(list(a.parameters()), list(grads))
        reference.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    assert int(ours.steps) == 5 and "exp_avg_sq_1" in ours.state_dict()
